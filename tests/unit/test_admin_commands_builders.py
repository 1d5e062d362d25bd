"""Command-line builders of ScalixAdmin: templates, overrides, quoting, prefixes, batches."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import ConfigError, MigrationError
from scalix_migrate.scalix.admin import (
    DEFAULT_TEMPLATES,
    BatchItem,
    ScalixAdmin,
    _split_batch,
)


def make_cfg(**ssh: Any) -> TenantConfig:
    return TenantConfig.model_validate(
        {
            "tenant": "acme",
            "allow_inline_secrets": True,
            "source": {
                "server": "scalix.example.test",
                "server_names": "mail1, mail2",
                "admin_user": "sxadmin",
                "admin_password": "not-shown",
                "test_user": "kim@example.test",
                "ssh": ssh,
            },
            "destination": {"type": "maildir", "path": "/tmp/x/{email}"},
        }
    )


EVIL = "o'brien; touch /tmp/pwned"


def test_default_lines_quote_every_value() -> None:
    admin = ScalixAdmin(make_cfg())
    line = admin.command_line("omshowu_user", name=EVIL)
    assert shlex.split(line) == ["/opt/scalix/bin/omshowu", "-n", EVIL, "-f"]
    assert shlex.split(admin.command_line("omlimit", name="$(id)`x`")) == [
        "/opt/scalix/bin/omlimit",
        "-u",
        "$(id)`x`",
        "-r",
    ]
    assert admin.command_line("omshowu_all") == "/opt/scalix/bin/omshowu -m all"


def test_prefixes_and_bin_dir() -> None:
    admin = ScalixAdmin(make_cfg(sudo=True, omcurrent="web x", bin_dir="/srv/sx bin/"))
    line = admin.command_line("sxdu", name="Kim Lee/mail1")
    assert shlex.split(line) == [
        "OMCURRENT=web x",
        "sudo",
        "-n",
        "/srv/sx bin/sxdu",
        "-a",
        "Kim Lee/mail1",
    ]


def test_overrides_and_template_errors() -> None:
    admin = ScalixAdmin(
        make_cfg(commands={"sxdu": "{bin}/sxdu -k {name}", "omshowu_all": "{bin}/omshowu -m {x}"})
    )
    assert admin.command_line("sxdu", name="a b") == "/opt/scalix/bin/sxdu -k 'a b'"
    assert admin.command_line("omstat_all") == DEFAULT_TEMPLATES["omstat_all"].format(
        bin="/opt/scalix/bin"
    )
    with pytest.raises(ConfigError, match=r"uses \{x\}"):
        admin.command_line("omshowu_all")
    with pytest.raises(ConfigError, match="no admin command template named 'nope'"):
        admin.command_line("nope")


def test_split_batch() -> None:
    out = "line1\nline2\n@@SXM@@ 0\n@@SXM@@ 1\nno newline@@SXM@@ 0\n"
    assert _split_batch(out) == [(0, "line1\nline2\n"), (1, ""), (0, "no newline")]


class _ScriptedAdmin(ScalixAdmin):
    """Answers exec calls from a canned stdout, recording the scripts it was given."""

    def __init__(self, cfg: TenantConfig, outputs: list[str]) -> None:
        super().__init__(cfg)
        self.outputs = outputs
        self.scripts: list[str] = []

    def _exec(self, line: str, *, logged: bool = True) -> tuple[int, str, str]:
        self.scripts.append(line)
        return 0, self.outputs.pop(0), "some stderr"


def test_run_batch_chunks_and_splits() -> None:
    admin = _ScriptedAdmin(make_cfg(), ["a\n@@SXM@@ 0\n@@SXM@@ 2\n", "c\n@@SXM@@ 0\n"])
    items = [BatchItem("sxdu", {"name": n}) for n in ("A/m", "B/m", EVIL)]
    results = admin.run_batch(items, chunk=2)
    assert [r.exit_status for r in results] == [0, 2, 0]
    assert [r.stdout for r in results] == ["a\n", "", "c\n"]
    assert [r.stderr for r in results] == ["", "some stderr", ""]
    assert admin.scripts[0] == (
        '/opt/scalix/bin/sxdu -a A/m; echo "@@SXM@@ $?"; '
        '/opt/scalix/bin/sxdu -a B/m; echo "@@SXM@@ $?"'
    )
    lexer = shlex.shlex(admin.scripts[1], posix=True, punctuation_chars=";")
    assert list(lexer)[:4] == ["/opt/scalix/bin/sxdu", "-a", EVIL, ";"]


def test_run_batch_refuses_output_with_missing_markers() -> None:
    admin = _ScriptedAdmin(make_cfg(), ["a\n@@SXM@@ 0\n"])
    with pytest.raises(MigrationError, match="SXM-SSH-006"):
        admin.run_batch([BatchItem("sxdu", {"name": "A/m"}), BatchItem("sxdu", {"name": "B"})])
