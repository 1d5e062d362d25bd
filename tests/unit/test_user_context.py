"""One user, one identity: preflight names and opens a user exactly as extract and load do."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalix_migrate import load
from scalix_migrate.config import TenantConfig
from scalix_migrate.extract import extract_user
from scalix_migrate.preflight import folder_findings
from scalix_migrate.preflight_destination import destination_findings
from scalix_migrate.records import ScalixUser
from scalix_migrate.state import Journal
from tests.unit.scripted_imap import Script, ScriptedIMAP
from tests.unit.test_imap_source_unit import make_cfg

# No address (so the email form falls back), an auth id, a display name with umlauts.
JOERG = ScalixUser(display_name="Jörg Ünger", mailnode="sales", auth_id="joerg")


def _login_sent(tmp_path: Path, identity: str, *, by: str) -> bytes | None:
    with ScriptedIMAP(Script()) as server:
        cfg = make_cfg(tmp_path, server.port, login_identity=identity)
        if by == "preflight":
            folder_findings(cfg, [JOERG])
        else:
            with Journal.open(directory=tmp_path / "state") as journal:
                extract_user(cfg, journal, JOERG)
    return server.login_user


@pytest.mark.parametrize("identity", ["email", "auth_id", "display_name"])
def test_preflight_logs_in_as_extract_does(tmp_path: Path, identity: str) -> None:
    """The mboxadmin user slot, its fallbacks and its quoting (a literal for non-ASCII) are
    the same for preflight's folder check as for extract."""
    by_extract = _login_sent(tmp_path, identity, by="extract")
    by_preflight = _login_sent(tmp_path, identity, by="preflight")
    assert by_extract is not None
    assert by_preflight == by_extract


def test_preflight_checks_the_path_the_load_writes(tmp_path: Path) -> None:
    """``{email}`` of a user without an address is the same for preflight and the sink."""
    cfg = TenantConfig.model_validate(
        {
            "tenant": "acme",
            "allow_inline_secrets": True,
            "source": {
                "server": "127.0.0.1",
                "server_names": ["sales"],
                "admin_user": "sxadmin",
                "admin_password": "pw",
                "test_user": "kim.lee@example.test",
            },
            "destination": {"type": "maildir", "path": str(tmp_path / "out" / "{email}")},
            "options": {"staging_dir": str(tmp_path / "staging")},
        }
    )
    huge = ScalixUser(
        display_name="Jörg Ünger", mailnode="sales", auth_id="joerg", mailbox_kib=1 << 40
    )
    (full,) = destination_findings(cfg, huge, [huge])  # more than any disk: the path is named
    sink = load.open_destination(cfg, huge)  # the sink factory load_user uses by default
    assert full.code == "PF-DST-005"
    assert f"destination path {sink.root}:" in full.message  # type: ignore[attr-defined]
