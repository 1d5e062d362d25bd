"""The embedded sandbox end to end: pymap IMAP and paramiko SSH on loopback, real clients."""

from __future__ import annotations

import imaplib
import shlex
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import paramiko
import pytest
from imapclient import IMAPClient

from scalix_migrate.config import load_config
from scalix_migrate.sandbox import Sandbox
from scalix_migrate.sandbox.directory import DirectoryUser, FolderSpec, SeedMessage
from scalix_migrate.sandbox.imap_server import LOGIN_FAILURE
from scalix_migrate.sandbox.seed import SLASH_FOLDER, demo_tenant
from scalix_migrate.sandbox.ssh_server import fingerprint

HOSTILE = "o'brien; touch /tmp/sxm-pwned-sandbox"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    began = time.monotonic()
    with Sandbox(tmp_path_factory.mktemp("sandbox")) as sb:
        elapsed = time.monotonic() - began
        # Recorded for the report: the figure is the sandbox's own measurement.
        print(f"\nsandbox start-up: {sb.start_seconds:.3f} s (wall {elapsed:.3f} s)")
        yield sb


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_login(sb: Sandbox, login: str, password: str) -> IMAPClient:
    client = IMAPClient(sb.host, port=sb.imap_port, ssl=False, timeout=10)
    # imapclient's login() sends the user name unquoted; Scalix names contain spaces.
    client._imap.login(quoted(login), password)
    return client


def ssh(sb: Sandbox, command: str, *, password: str | None = None) -> tuple[int, str, str]:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(f"[{sb.host}]:{sb.ssh_port}", "ecdsa-sha2-nistp256", _host_key(sb))
    client.connect(
        sb.host,
        port=sb.ssh_port,
        username=sb.ssh_user,
        password=sb.ssh_password if password is None else password,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
        look_for_keys=False,
        allow_agent=False,
    )
    with client:
        _, stdout, stderr = client.exec_command(command, timeout=20)
        out, err = stdout.read().decode(), stderr.read().decode()
        return stdout.channel.recv_exit_status(), out, err


def _host_key(sb: Sandbox) -> paramiko.PKey:
    transport = paramiko.Transport((sb.host, sb.ssh_port))
    try:
        transport.start_client(timeout=10)
        key = transport.get_remote_server_key()
    finally:
        transport.close()
    assert fingerprint(key) == sb.host_key_fingerprint
    return key


def test_startup_is_quick(sandbox: Sandbox) -> None:
    assert 0 < sandbox.start_seconds < 10
    assert sandbox.imap_port != sandbox.ssh_port


def test_mboxadmin_login_with_display_names_and_capability(sandbox: Sandbox) -> None:
    with imap_login(sandbox, "mboxadmin:Scalix Admin:Kim Lee", sandbox.admin_password) as c:
        assert b"X-SCALIX-1" in c.capabilities()
        assert c.select_folder("INBOX", readonly=True)[b"EXISTS"] == 70


@pytest.mark.parametrize(
    ("login", "password_ok"),
    [
        ("mboxadmin:sxadmin:Kim Lee", False),
        ("mboxadmin:sxadmin:Nobody Here", True),
        ("mboxadmin:Kim Lee:sxadmin", True),  # Kim holds no mboxadmin
        ("kim.lee@acme.test", True),  # Kim's login with the admin's password
    ],
)
def test_refused_logins_answer_scalix_text(sandbox: Sandbox, login: str, password_ok: bool) -> None:
    client = IMAPClient(sandbox.host, port=sandbox.imap_port, ssl=False, timeout=10)
    with client, pytest.raises(imaplib.IMAP4.error) as info:
        client._imap.login(quoted(login), sandbox.admin_password if password_ok else "wrong")
    assert str(info.value) == str(LOGIN_FAILURE.encode())


def test_list_carries_scalix_attributes(sandbox: Sandbox) -> None:
    with imap_login(sandbox, "mboxadmin:sxadmin:kim.lee@acme.test", sandbox.admin_password) as c:
        folders = {name: set(flags) for flags, delim, name in c.list_folders()}
        assert {delim for _, delim, _ in c.list_folders()} == {b"/"}
    assert b"\\X-SpecialFolder=SentItems" in folders["Sent Items"]
    assert b"\\X-SpecialFolder=DeletedItems" in folders["Deleted Items"]
    assert {b"\\X-SpecialFolder=Calendar", b"\\X-FolderClass=IPF.Appointment"} <= folders[
        "Calendar"
    ]
    assert b"\\X-FolderClass=IPF.Contact" in folders["Contacts"]
    assert "INBOX/Projekte/Größe" in folders
    assert "Archiv/2019" in folders
    assert b"\\X-Total-Msgs=70" in folders["INBOX"]
    assert b"\\Noselect" in folders["Other Users"]
    assert b"\\Noselect" in folders["Public Folders"]
    assert not any(
        b"\\Noselect" in f for n, f in folders.items() if n not in ("Other Users", "Public Folders")
    )


def test_fetch_round_trips_bytes_flags_and_internaldate(sandbox: Sandbox) -> None:
    seeded = demo_tenant().messages["Kim Lee/main"]
    expected = [m for m in seeded if m.folder == "INBOX/Projekte/Größe"]
    with imap_login(sandbox, "mboxadmin:sxadmin:Kim Lee", sandbox.admin_password) as c:
        c.normalise_times = False
        c.select_folder("INBOX/Projekte/Größe", readonly=True)
        uids = c.search("ALL")
        data = c.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
        again = c.fetch(uids, ["FLAGS"])
    got = [data[u] for u in sorted(uids)]
    assert len(got) == len(expected) == 9
    for item, want in zip(got, expected, strict=True):
        assert item[b"BODY[]"] == want.body
        assert {f.decode() for f in item[b"FLAGS"]} == set(want.flags)
        assert item[b"INTERNALDATE"] == want.internaldate
        assert item[b"INTERNALDATE"].utcoffset() == want.internaldate.utcoffset()
    assert [again[u][b"FLAGS"] for u in sorted(uids)] == [g[b"FLAGS"] for g in got]


def test_scalix_flags_keep_their_spelling(sandbox: Sandbox) -> None:
    seeded = demo_tenant().messages["Kim Lee/main"]
    inbox = [m for m in seeded if m.folder == "INBOX"]
    with imap_login(sandbox, "mboxadmin:sxadmin:Kim Lee", sandbox.admin_password) as c:
        c.select_folder("INBOX", readonly=True)
        flags = c.get_flags(c.search("ALL"))
    served = {f.decode() for fs in flags.values() for f in fs}
    wanted = {f for m in inbox for f in m.flags}
    assert served == wanted
    assert {"\\X-Forwarded", "\\X-Has-Attach"} <= served


def test_user_without_store_sees_an_empty_inbox(sandbox: Sandbox) -> None:
    with imap_login(sandbox, "mboxadmin:sxadmin:New Hire", sandbox.admin_password) as c:
        names = [name for _, _, name in c.list_folders()]
        assert names == ["INBOX", "Other Users", "Public Folders"]
        assert c.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0


def test_slash_folder_and_export_name_user(sandbox: Sandbox) -> None:
    with imap_login(sandbox, "mboxadmin:sxadmin:Lars Berg", sandbox.admin_password) as c:
        assert SLASH_FOLDER in [name for _, _, name in c.list_folders()]
        assert c.select_folder(SLASH_FOLDER, readonly=True)[b"EXISTS"] == 7
    code, out, _ = ssh(sandbox, "/opt/scalix/bin/omshowu -n 'Priya Shah' -f")
    assert code == 0
    lines = out.splitlines()
    assert "Authentication ID: pshah@acme.test" in lines
    addresses = [x.split(": ", 1)[1] for x in lines if x.startswith("Internet Address:")]
    assert addresses == ["priya.shah@acme.test", "pshah@acme.test"]


def test_ssh_lists_users_with_exit_status(sandbox: Sandbox) -> None:
    code, out, err = ssh(sandbox, "sudo -n /opt/scalix/bin/omshowu -m all")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{u.name}/CN={u.display_name}" for u in demo_tenant().directory.users
    ]
    code, out, err = ssh(sandbox, "/opt/scalix/bin/omshowu -n 'Nobody' -f")
    assert code == 1
    assert 'user "Nobody" not found' in err


def test_ssh_batch_with_markers_and_hostile_name(sandbox: Sandbox) -> None:
    line = (
        'OMCURRENT=sx /opt/scalix/bin/omshowmn; echo "@@SXM@@ $?"; '
        f'/opt/scalix/bin/omshowu -n {shlex.quote(HOSTILE)} -f; echo "@@SXM@@ $?"; '
        "/opt/scalix/bin/omlimit -u 'Kim Lee' -r; echo \"@@SXM@@ $?\""
    )
    code, out, err = ssh(sandbox, line)
    assert code == 0
    assert out.splitlines() == [
        "**      main",
        "        branch",
        "@@SXM@@ 0",
        "@@SXM@@ 1",
        "Message Store Size Limit: 1000000kb",
        "@@SXM@@ 0",
    ]
    assert HOSTILE in err
    assert not Path("/tmp/sxm-pwned-sandbox").exists()
    code, _, err = ssh(sandbox, "/opt/scalix/bin/omshowmn | cat")
    assert code == 2
    assert "unsupported" in err


def test_wrong_ssh_password_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        ssh(sandbox, "/opt/scalix/bin/omshowmn", password="wrong")


def test_write_config_is_a_valid_tenant(sandbox: Sandbox, tmp_path: Path) -> None:
    path = sandbox.write_config(
        tmp_path / "sandbox.yaml", {"type": "maildir", "path": str(tmp_path / "out/{email}")}
    )
    cfg = load_config(path)
    assert cfg.source.ssh.port == sandbox.ssh_port
    assert cfg.source.ssh.host_key_fingerprint == sandbox.host_key_fingerprint
    assert cfg.source.imap.effective_port == sandbox.imap_port
    assert cfg.source.imap.tls.value == "none"
    assert cfg.source.admin_password.resolve() == sandbox.admin_password
    assert cfg.source.server_names == ["main", "branch"]
    assert sandbox.admin_password not in repr(cfg)
    assert path.stat().st_mode & 0o077 == 0


def test_admin_commands_change_what_imap_allows(tmp_path: Path) -> None:
    """A fresh sandbox: add a user, seed it, revoke mboxadmin and stop IMAP over SSH."""
    with Sandbox(tmp_path, seed=False) as sb:
        user = DirectoryUser(
            display_name=HOSTILE,
            mailnode="branch",
            auth_id="obrien",
            addresses=["obrien@acme.test"],
            password="pw-obrien",
            folders=[FolderSpec("INBOX"), FolderSpec("Ärger/2021", special=None)],
        )
        sb.add_user(user)
        when = datetime(2021, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5, minutes=30)))
        body = b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nhello\r\n"
        sb.seed_messages("obrien", [SeedMessage("Ärger/2021", body, ["\\Seen", "Work"], when)])
        login = f"mboxadmin:sxadmin:{HOSTILE}"
        with imap_login(sb, login, sb.admin_password) as c:
            c.normalise_times = False
            c.select_folder("Ärger/2021", readonly=True)
            [(_uid, item)] = c.fetch(
                c.search("ALL"), ["BODY.PEEK[]", "INTERNALDATE", "FLAGS"]
            ).items()
            assert item[b"BODY[]"] == body
            assert item[b"INTERNALDATE"].astimezone(UTC) == when.astimezone(UTC)
            assert set(item[b"FLAGS"]) == {b"\\Seen", b"Work"}

        assert ssh(sb, "/opt/scalix/bin/ommodu -o sxadmin -c -mboxadmin")[0] == 0
        client = IMAPClient(sb.host, port=sb.imap_port, ssl=False, timeout=10)
        with client, pytest.raises(imaplib.IMAP4.error, match="LOGIN failure"):
            client._imap.login(quoted(login), sb.admin_password)
        assert ssh(sb, "/opt/scalix/bin/ommodu -o sxadmin -c +mboxadmin")[0] == 0

        assert ssh(sb, "/opt/scalix/bin/omoff -d 0 imap")[0] == 0
        client = IMAPClient(sb.host, port=sb.imap_port, ssl=False, timeout=10)
        with client, pytest.raises(imaplib.IMAP4.error, match="not running"):
            client._imap.login(quoted(login), sb.admin_password)
        assert ssh(sb, "/opt/scalix/bin/omon imap")[0] == 0
        imap_login(sb, login, sb.admin_password).logout()
