"""The emulators' directory cache and the test bed's opt-in batch fast path.

``same_as_sh`` must only accept lines that the sh-subset interpreter runs exactly like
``/bin/sh``; the entry script must fall back to the real shell for everything else.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from scalix_migrate.sandbox.admin_commands import run
from scalix_migrate.sandbox.directory import Directory, DirectoryUser
from scalix_migrate.sandbox.shell import ShellSyntaxError, parse, same_as_sh
from tests.testbed.sshd import ADMIN_COMMANDS, ENTRY_SCRIPT

BIN = "/opt/sx/bin"
HOSTILE = "o'brien; touch /tmp/pwned"


def _user(
    display: str, node: str = "main", *, addresses: list[str] | None = None, mailbox_kib: int = 0
) -> DirectoryUser:
    tag = display.lower().replace(" ", ".")
    return DirectoryUser(
        display_name=display,
        mailnode=node,
        auth_id=tag,
        addresses=addresses or [f"{tag}@example.test"],
        password="pw",
        mailbox_kib=mailbox_kib,
    )


@pytest.fixture
def dpath(tmp_path: Path) -> Path:
    path = tmp_path / "directory.json"
    Directory(mailnodes=["main"], users=[_user("Kim Lee", mailbox_kib=7), _user(HOSTILE)]).save(
        path
    )
    return path


@pytest.mark.parametrize(
    "line",
    [
        f'{BIN}/omshowu -n {shlex.quote(HOSTILE)} -f; echo "@@SXM@@ $?"',
        f"OMCURRENT=sx sudo -n {BIN}/sxdu -a 'Kim Lee/main'; echo \"@@SXM@@ $?\"",
        'omshowmn; echo "@@SXM@@ $?"; true; false; :',
        "omshowu -n 'a#b ~c *?[' -f",
        "echo a#b",
    ],
)
def test_same_as_sh_accepts_the_admin_client_batches(line: str) -> None:
    assert same_as_sh(line, bin_dir=BIN, wrappers=ADMIN_COMMANDS)


@pytest.mark.parametrize(
    "line",
    [
        "omshowu -m all | cat",  # pipes
        "omshowu -m all\nid",  # a newline separates commands in sh
        "omshowu -m all # comment",
        "ls *",  # globbing
        "cd ~",
        "/usr/bin/omshowu -m all",  # not the wrappers' directory: sh would not find it
        f"{BIN}/omcheckgc -d",  # emulated, but the test bed has no wrapper for it
        "omcheckgc -d",
        "id",
        "echo -n x",  # dash's echo options
        "echo 'a\\nb'",  # dash's echo escapes
        "sudo -u root omshowmn",  # the stand-in sudo skips the option's argument
        "sudo -n",  # sudo without a command
        f"{BIN}/sudo omshowmn",
        "echo $HOME",
    ],
)
def test_same_as_sh_refuses_anything_else(line: str) -> None:
    assert not same_as_sh(line, bin_dir=BIN, wrappers=ADMIN_COMMANDS)


def test_parser_refuses_sh_syntax_with_another_meaning() -> None:
    for line in ("a\nb", "ls *.txt", "echo ?", "echo [a]", "echo #x", "cd ~"):
        with pytest.raises(ShellSyntaxError):
            parse(line)
    assert parse("echo a#b c~d 'x\ny' \"*\"") == [["echo", "a#b", "c~d", "x\ny", "*"]]
    assert parse("a\\\nb") == [["ab"]]  # a backslash-newline joins lines, as in sh


def _entry(line: str, dpath: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "SSH_ORIGINAL_COMMAND": line,
        "SXM_SANDBOX_DIRECTORY": str(dpath),
        "HOME": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "-S", str(ENTRY_SCRIPT), "line", BIN, *ADMIN_COMMANDS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )


def test_entry_runs_an_emulated_batch_in_process(dpath: Path, tmp_path: Path) -> None:
    # BIN does not exist: only the in-process interpreter can answer these commands.
    marker = tmp_path / "pwned"
    name = f"x; touch {marker}"
    line = (
        f"{BIN}/sxdu -a 'Kim Lee/main'; echo \"@@SXM@@ $?\"; "
        f'sudo -n {BIN}/omshowu -n {shlex.quote(name)} -f; echo "@@SXM@@ $?"'
    )
    proc = _entry(line, dpath, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "7\tKim Lee/main\n@@SXM@@ 0\n@@SXM@@ 1\n"
    assert proc.stderr == f'omshowu: user "{name}" not found\n'
    assert not marker.exists()


def test_entry_gives_other_lines_to_the_real_shell(dpath: Path, tmp_path: Path) -> None:
    proc = _entry("echo abc | tr a-c x-z; echo -n end", dpath, tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "xyz\nend")
    # Another directory than bin_dir: not emulated, and the real shell finds no such command.
    proc = _entry("/elsewhere/omshowmn", dpath, tmp_path)
    assert proc.returncode == 127
    assert proc.stdout == ""


def test_cached_directory_sees_every_write(dpath: Path) -> None:
    assert run(["omshowu", "-n", "Kim Lee", "-f"], dpath).stdout.count("Unlocked") == 1
    # A write by another process (Directory.save) of the same size, right away.
    for state in ("Stopped", "Started", "Stopped"):
        d = Directory.load(dpath)
        d.services["Session Monitor"] = state
        before = dpath.stat().st_size
        d.save(dpath)
        assert dpath.stat().st_size == before  # "Started" and "Stopped": same length
        listed = run(["omstat", "-a"], dpath).stdout
        assert any(
            line.startswith("Session Monitor") and state in line for line in listed.splitlines()
        )
    # A write through the emulators themselves.
    assert run(["ommodu", "-o", "Kim Lee", "-K"], dpath).exit_status == 0
    assert "Mail Account: Locked" in run(["omshowu", "-n", "kim.lee", "-f"], dpath).stdout


def test_lookups_keep_find_semantics(tmp_path: Path) -> None:
    """The first user that matches wins, in any accepted form, case-insensitively."""
    first = _user("Alpha", addresses=["shared@example.test"])
    second = _user("shared@example.test", node="other")
    path = tmp_path / "d.json"
    Directory(mailnodes=["main", "other"], users=[first, second]).save(path)
    for ident in ("SHARED@example.test", " alpha ", "Alpha/main/CN=Alpha", "ALPHA"):
        assert run(["sxdu", "-a", ident], path).stdout == "0\tAlpha/main\n", ident
    assert run(["sxdu", "-a", "shared@example.test/other"], path).exit_status == 0
    assert run(["sxdu", "-a", "nobody"], path).exit_status == 1
    assert os.path.exists(f"{path}.lock")
