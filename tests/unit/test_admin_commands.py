"""The emulated Scalix admin commands, run against a small directory file."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from scalix_migrate.sandbox.admin_commands import CommandResult, run
from scalix_migrate.sandbox.directory import Directory, DirectoryUser

HOSTILE = "o'brien; touch /tmp/x"


@pytest.fixture
def dpath(tmp_path: Path) -> Path:
    users = [
        DirectoryUser(
            display_name="Scalix Admin",
            mailnode="main",
            auth_id="sxadmin",
            addresses=["sxadmin@example.test"],
            password="pw",
            full_admin=True,
            capabilities=["mboxadmin"],
        ),
        DirectoryUser(
            display_name="Kim Lee",
            mailnode="main",
            auth_id="k.lee@example.test",
            addresses=["kim@example.test", "k.lee@example.test"],
            password="pw",
            user_class="Limited",
            mailbox_kib=2048,
            store_limit_kib=500000,
            sessions=["IMAP client", "SWA client"],
        ),
        DirectoryUser(
            display_name=HOSTILE,
            mailnode="branch",
            auth_id="obrien",
            addresses=["obrien@example.test"],
            password="pw",
            has_message_store=False,
            sessions=["Outlook client"],
        ),
    ]
    d = Directory(mailnodes=["main", "branch"], users=users, broken_services=["SMTP Relay"])
    path = tmp_path / "directory.json"
    d.save(path)
    return path


def ok(argv: list[str], path: Path) -> list[str]:
    result = run(argv, path)
    assert result.exit_status == 0, result
    assert result.stderr == ""
    return result.stdout.splitlines()


def details(path: Path, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in ok(["omshowu", "-n", name, "-f"], path):
        key, value = line.split(":", 1)
        out.setdefault(key, []).append(value.strip())
    return out


def test_omshowu_all_and_per_mailnode(dpath: Path) -> None:
    assert ok(["omshowu", "-m", "all"], dpath) == [
        "Scalix Admin/main/CN=Scalix Admin",
        "Kim Lee/main/CN=Kim Lee",
        f"{HOSTILE}/branch/CN={HOSTILE}",
    ]
    assert ok(["omshowu", "-m", "branch"], dpath) == [f"{HOSTILE}/branch/CN={HOSTILE}"]
    bad = run(["omshowu", "-m", "nowhere"], dpath)
    assert bad.exit_status == 1
    assert "nowhere" in bad.stderr


@pytest.mark.parametrize(
    "name",
    [
        "Kim Lee",
        "kim lee/main",
        "Kim Lee/main/CN=Kim Lee",
        "k.lee@example.test",
        "KIM@example.test",
    ],
)
def test_omshowu_full_details_by_any_name(dpath: Path, name: str) -> None:
    info = details(dpath, name)
    assert info["User Name"] == ["Kim Lee/main/CN=Kim Lee"]
    assert info["Mail Account"] == ["Unlocked"]
    assert info["Authentication ID"] == ["k.lee@example.test"]
    assert info["Internet Address"] == ["kim@example.test", "k.lee@example.test"]
    assert info["Class"] == ["Limited"]
    assert info["Admin Capabilities"] == ["None"]
    assert info["Full Administrator"] == ["No"]
    assert info["Message Store"] == ["Yes"]


def test_omshowu_admin_and_storeless_user(dpath: Path) -> None:
    admin = details(dpath, "sxadmin")
    assert admin["Admin Capabilities"] == ["mboxadmin"]
    assert admin["Full Administrator"] == ["Yes"]
    assert details(dpath, "obrien@example.test")["Message Store"] == ["No"]


def test_omshowu_without_f_is_short(dpath: Path) -> None:
    assert ok(["omshowu", "-n", "Kim Lee"], dpath) == [
        "User Name: Kim Lee/main/CN=Kim Lee",
        "Mail Account: Unlocked",
    ]


def test_unknown_user_fails_on_stderr(dpath: Path) -> None:
    for argv in (
        ["omshowu", "-n", "Nobody", "-f"],
        ["ommodu", "-o", "Nobody", "-K"],
        ["omlimit", "-u", "Nobody", "-r"],
        ["sxdu", "-a", "Nobody"],
    ):
        result = run(argv, dpath)
        assert result.exit_status == 1, argv
        assert result.stdout == ""
        assert 'user "Nobody" not found' in result.stderr


def test_hostile_name_is_just_a_name(dpath: Path, tmp_path: Path) -> None:
    info = details(dpath, HOSTILE)
    assert info["User Name"] == [f"{HOSTILE}/branch/CN={HOSTILE}"]
    ok(["ommodu", "-o", HOSTILE, "-K"], dpath)
    assert details(dpath, HOSTILE)["Mail Account"] == ["Locked"]
    assert ok(["sxdu", "-a", HOSTILE], dpath) == [f"0\t{HOSTILE}/branch"]
    missing = run(["omshowu", "-n", "x'; touch /tmp/pwned-sxm #", "-f"], dpath)
    assert missing.exit_status == 1
    assert not Path("/tmp/pwned-sxm").exists()


def test_ommodu_capabilities(dpath: Path) -> None:
    ok(["ommodu", "-o", "Kim Lee", "-c", "+mboxadmin"], dpath)
    ok(["ommodu", "-o", "Kim Lee", "-c", "+mboxadmin"], dpath)  # idempotent
    assert details(dpath, "Kim Lee")["Admin Capabilities"] == ["mboxadmin"]
    assert Directory.load(dpath).authenticate("mboxadmin:Kim Lee:sxadmin", "pw") is not None
    ok(["ommodu", "-o", "Kim Lee", "-c", "-mboxadmin"], dpath)
    assert details(dpath, "Kim Lee")["Admin Capabilities"] == ["None"]
    assert Directory.load(dpath).authenticate("mboxadmin:Kim Lee:sxadmin", "pw") is None
    bad = run(["ommodu", "-o", "Kim Lee", "-c", "mboxadmin"], dpath)
    assert bad.exit_status == 2


def test_ommodu_lock_and_unlock(dpath: Path) -> None:
    ok(["ommodu", "-o", "kim@example.test", "-K"], dpath)
    assert details(dpath, "Kim Lee")["Mail Account"] == ["Locked"]
    assert Directory.load(dpath).authenticate("kim@example.test", "pw") is None
    assert ok(["omstat", "-u", "rci", "-c"], dpath) == [
        f"{HOSTILE}/branch/CN={HOSTILE}  Outlook client  4020"
    ]
    ok(["ommodu", "-o", "kim@example.test", "-k"], dpath)
    assert details(dpath, "Kim Lee")["Mail Account"] == ["Unlocked"]
    assert Directory.load(dpath).authenticate("kim@example.test", "pw") is not None
    assert run(["ommodu", "-o", "Kim Lee"], dpath).exit_status == 2


def parse_services(lines: list[str]) -> dict[str, str]:
    """The icsw parser of scalix.md §1.3: name words, state, date token, optional count."""
    states = {}
    for line in lines:
        parts = line.split()
        if parts[-1].isdigit():
            parts.pop()
        parts.pop()  # date
        state = parts.pop()
        states[" ".join(parts)] = state
    return states


def test_omstat_service_listing(dpath: Path) -> None:
    everything = parse_services(ok(["omstat", "-a"], dpath))
    assert everything["IMAP Server"] == "Enabled"
    assert everything["Request Server"] == "Started"
    assert len(everything) == 9
    daemons = parse_services(ok(["omstat", "-s"], dpath))
    assert "IMAP Server" not in daemons
    assert daemons["Session Monitor"] == "Started"
    line = next(x for x in ok(["omstat", "-a"], dpath) if x.startswith("Request Server"))
    assert line.split()[-1] == "1"
    assert ok(["omstat", "-q", "router"], dpath) == []


def test_omstat_sessions(dpath: Path) -> None:
    lines = ok(["omstat", "-u", "rci", "-c"], dpath)
    assert sum("IMAP client" in x for x in lines) == 1
    assert sum("SWA client" in x for x in lines) == 1
    assert sum("Outlook client" in x for x in lines) == 1
    assert run(["omstat", "-u", "bogus", "-c"], dpath).exit_status == 1


@pytest.mark.parametrize("alias", ["imap", "IMAP Server", "imap server"])
def test_omoff_and_omon_single_service(dpath: Path, alias: str) -> None:
    ok(["omoff", "-d", "0", alias], dpath)
    states = parse_services(ok(["omstat", "-a"], dpath))
    assert states["IMAP Server"] == "Disabled"
    assert states["POP3 Interface"] == "Enabled"
    assert not any("IMAP client" in x for x in ok(["omstat", "-u", "rci", "-c"], dpath))
    ok(["omon", alias], dpath)
    assert parse_services(ok(["omstat", "-a"], dpath))["IMAP Server"] == "Enabled"


def test_omoff_daemon_stops_and_omon_all(dpath: Path) -> None:
    ok(["omoff", "-d", "0", "rci", "pop3", "router"], dpath)
    states = parse_services(ok(["omstat", "-a"], dpath))
    assert states["Remote Client Interface"] == "Disabled"
    assert states["Service Router"] == "Stopped"
    ok(["omon", "-s", "all"], dpath)
    states = parse_services(ok(["omstat", "-a"], dpath))
    assert all(s in ("Enabled", "Started") for s in states.values())
    unknown = run(["omoff", "-d", "0", "warp-drive"], dpath)
    assert unknown.exit_status == 1
    assert "warp-drive" in unknown.stderr
    assert run(["omon"], dpath).exit_status == 2


def test_omlimit_sxdu_omshowmn_omcheckgc(dpath: Path) -> None:
    assert ok(["omlimit", "-u", "Kim Lee", "-r"], dpath) == ["Message Store Size Limit: 500000kb"]
    assert ok(["sxdu", "-a", "kim@example.test"], dpath) == ["2048\tKim Lee/main"]
    assert ok(["omshowmn"], dpath) == ["**      main", "        branch"]
    assert ok(["omcheckgc", "-d"], dpath) == ["/var/opt/scalix/sx/s"]


def test_service_scalix_restart_keeps_broken_service_stopped(dpath: Path) -> None:
    assert run(["service", "scalix", "status"], dpath).exit_status == 0
    stop = run(["service", "scalix", "stop"], dpath)
    assert stop.exit_status == 0
    assert set(parse_services(ok(["omstat", "-a"], dpath)).values()) == {"Stopped"}
    assert ok(["omstat", "-u", "rci", "-c"], dpath) == []
    assert run(["service", "scalix", "status"], dpath).exit_status == 3
    ok(["service", "scalix", "restart"], dpath)
    states = parse_services(ok(["omstat", "-a"], dpath))
    assert states["SMTP Relay"] == "Stopped"
    assert states["IMAP Server"] == "Enabled"
    status = run(["service", "scalix", "status"], dpath)
    assert status.exit_status == 1
    assert "SMTP Relay: Stopped" in status.stdout


def test_service_scalix_tomcat(dpath: Path) -> None:
    assert run(["service", "scalix-tomcat", "status"], dpath) == CommandResult(
        0, "scalix-tomcat is running\n", ""
    )
    ok(["service", "scalix-tomcat", "stop"], dpath)
    assert Directory.load(dpath).tomcat_state == "Stopped"
    assert run(["service", "scalix-tomcat", "status"], dpath).exit_status == 3
    sessions = ok(["omstat", "-u", "rci", "-c"], dpath)
    assert not any("SWA client" in x for x in sessions)
    assert any("IMAP client" in x for x in sessions)
    ok(["service", "scalix-tomcat", "start"], dpath)
    assert run(["service", "scalix-tomcat", "status"], dpath).exit_status == 0
    assert run(["service", "scalix-postgres", "start"], dpath).exit_status == 1
    assert run(["service", "scalix", "reload"], dpath).exit_status == 2


def test_unknown_command_and_bad_options(dpath: Path) -> None:
    assert run(["rm", "-rf", "/"], dpath).exit_status == 127
    assert run(["/opt/scalix/bin/omshowmn"], dpath).exit_status == 0
    assert run(["omshowu", "-Z"], dpath).exit_status == 2
    assert run([], dpath).exit_status == 2


def test_console_entry(dpath: Path) -> None:
    env = {**os.environ, "SXM_SANDBOX_DIRECTORY": str(dpath)}
    proc = subprocess.run(
        [sys.executable, "-m", "scalix_migrate.sandbox.admin_commands", "omshowu", "-n", "Nobody"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "not found" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "scalix_migrate.sandbox.admin_commands", "omshowmn"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "**      main\n        branch\n")


# --- the sh subset the sandbox's SSH server executes (scalix_migrate.sandbox.shell) ----------


def test_shell_batch_with_markers_assignments_and_sudo(dpath: Path) -> None:
    from scalix_migrate.sandbox.shell import execute

    line = (
        'OMCURRENT=sx sudo -n /opt/scalix/bin/omshowmn; echo "@@SXM@@ $?"; '
        f'/opt/scalix/bin/sxdu -a {shlex.quote(HOSTILE)}; echo "@@SXM@@ $?"; '
        '/opt/scalix/bin/sxdu -a \'Nobody\'; echo "@@SXM@@ $?"; echo \'$?\' "a\\"b"'
    )
    result = execute(line, dpath)
    assert result.exit_status == 0
    assert result.stdout.splitlines() == [
        "**      main",
        "        branch",
        "@@SXM@@ 0",
        f"0\t{HOSTILE}/branch",
        "@@SXM@@ 0",
        "@@SXM@@ 1",
        '$? a"b',
    ]
    assert 'user "Nobody" not found' in result.stderr


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("/opt/scalix/bin/omshowmn | cat", 2),
        ("/opt/scalix/bin/omshowmn > /tmp/x", 2),
        ("echo $(id)", 2),
        ("echo `id`", 2),
        ("; omshowmn", 2),
        ("echo 'unterminated", 2),
        ("/bin/rm -rf /", 127),
        ("false", 1),
        ("omshowmn; false", 1),
    ],
)
def test_shell_refuses_what_it_does_not_emulate(dpath: Path, line: str, status: int) -> None:
    from scalix_migrate.sandbox.shell import execute

    assert execute(line, dpath).exit_status == status


def test_shell_quoting_matches_shlex(dpath: Path) -> None:
    from scalix_migrate.sandbox.shell import parse

    names = [HOSTILE, "x'; rm -rf / #", 'a "b" $HOME \\ c', "Größe ; ok"]
    line = " ".join(shlex.quote(n) for n in names)
    assert parse(line) == [names]
    assert parse("A=1 B='2 3' cmd x;y") == [["A=1", "B=2 3", "cmd", "x"], ["y"]]
