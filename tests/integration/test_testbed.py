"""The real-server test bed behaves like Scalix where the migration depends on it.

These run against the session's Dovecot/sshd instances (fixture ``testbed``); each test that
touches a mailbox adds its own uniquely named user.
"""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import paramiko
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from scalix_migrate.sandbox.directory import DirectoryUser, FolderSpec, SeedMessage
from tests.testbed import ScalixTestbed, running_testbed, scalix_default_folders
from tests.testbed.imap import login, quote
from tests.testbed.processes import descendants
from tests.testbed.sshd import fingerprint_of

SCALIX_FAILURE = "LOGIN failure, user name or password rejected"


def _new_user(testbed: ScalixTestbed, *, display: str | None = None) -> DirectoryUser:
    tag = secrets.token_hex(4)
    user = DirectoryUser(
        display_name=display or f"Test User {tag}",
        mailnode=testbed.directory().mailnodes[0],
        auth_id=f"tu{tag}",
        addresses=[f"tu.{tag}@example.test", f"alias.{tag}@example.test"],
        password=secrets.token_hex(8),
        folders=scalix_default_folders(),
    )
    testbed.add_user(user)
    return user


def _message(subject: str) -> bytes:
    return (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{secrets.token_hex(6)}@example.test>\r\n\r\nbody of {subject}\r\n"
    ).encode()


def _raw_login(port: int, user: str, password: str) -> bytes:
    """The server's tagged reply to ``a LOGIN <quoted user> <quoted password>``, verbatim."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # greeting
        sock.sendall(f"a LOGIN {quote(user)} {quote(password)}\r\n".encode())
        for _ in range(50):
            line = reader.readline()
            if not line or line.startswith(b"a "):
                return line
    raise AssertionError("no tagged LOGIN reply")


def _failure_text(reply: bytes) -> str:
    """The human text of a tagged NO, with a leading response code removed."""
    m = re.fullmatch(rb"a NO (?:\[[^\]]*\] )?(.*)\r\n", reply)
    assert m is not None, reply
    return m.group(1).decode()


@pytest.fixture
def user(testbed: ScalixTestbed) -> DirectoryUser:
    u = _new_user(testbed)
    testbed.seed_messages(
        u.primary_address,
        [SeedMessage("INBOX", _message(f"hello {u.auth_id}"), ["\\Seen"], datetime.now(UTC))],
    )
    return u


@pytest.mark.parametrize(
    "form",
    ["display", "email", "auth_id", "alias"],
)
def test_mboxadmin_login_opens_the_target_mailbox(
    testbed: ScalixTestbed, user: DirectoryUser, form: str
) -> None:
    admin = testbed.directory().find(testbed.admin_user)
    assert admin is not None
    target = {
        "display": user.display_name,
        "email": user.primary_address,
        "auth_id": user.auth_id,
        "alias": user.addresses[1],
    }[form]
    # Scalix's own example: display names with spaces on both sides, quoted.
    admin_name = admin.display_name if form == "display" else testbed.admin_user
    with login(testbed.imap_port, f"mboxadmin:{admin_name}:{target}", testbed.admin_password) as c:
        c.select_folder("INBOX", readonly=True)
        fetched = c.fetch(c.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    subjects = [v[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for v in fetched.values()]
    assert subjects == [f"Subject: hello {user.auth_id}".encode()]


def test_users_own_login_works_and_unquoted_display_name_is_bad(
    testbed: ScalixTestbed, user: DirectoryUser
) -> None:
    with login(testbed.imap_port, user.primary_address, user.password) as c:
        assert c.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
    # imapclient sends the user name as an atom: a display-name form must be quoted.
    client = IMAPClient("127.0.0.1", port=testbed.imap_port, ssl=False, timeout=10)
    try:
        with pytest.raises(IMAPClient.Error):
            client.login(f"mboxadmin:Scalix Admin:{user.display_name}", testbed.admin_password)
    finally:
        client.shutdown()


@pytest.mark.parametrize(
    ("who", "password"),
    [
        ("noright", "own"),  # a full admin without mboxadmin, with its right password
        ("sxadmin", "wrong"),  # the mboxadmin admin with a wrong password
        ("nobody-such", "admin"),  # an unknown admin
    ],
)
def test_failed_logins_get_scalix_text(
    testbed: ScalixTestbed, user: DirectoryUser, who: str, password: str
) -> None:
    directory = testbed.directory()
    pw = {
        "own": directory.find(who).password if directory.find(who) else "",  # type: ignore[union-attr]
        "wrong": testbed.admin_password + "x",
        "admin": testbed.admin_password,
    }[password]
    reply = _raw_login(testbed.imap_port, f"mboxadmin:{who}:{user.primary_address}", pw)
    assert reply.startswith(b"a NO ")
    assert _failure_text(reply) == SCALIX_FAILURE
    with (
        pytest.raises(LoginError, match=re.escape(SCALIX_FAILURE)),
        login(testbed.imap_port, f"mboxadmin:{who}:{user.primary_address}", pw),
    ):
        pass


def test_wrong_user_password_and_locked_user_rejected(
    testbed: ScalixTestbed, user: DirectoryUser
) -> None:
    reply = _raw_login(testbed.imap_port, user.primary_address, user.password + "x")
    assert _failure_text(reply) == SCALIX_FAILURE

    def lock(d: object) -> None:
        found = d.find(user.auth_id)  # type: ignore[attr-defined]
        found.locked = True

    testbed.update_directory(lock)
    assert _failure_text(_raw_login(testbed.imap_port, user.auth_id, user.password)) == (
        SCALIX_FAILURE
    )


def test_failed_logins_are_not_slowed_down(testbed: ScalixTestbed) -> None:
    started = time.monotonic()
    for _ in range(6):
        reply = _raw_login(testbed.imap_port, "mboxadmin:sxadmin:kim.lee@example.test", "bad")
        assert reply.startswith(b"a NO ")
    # Dovecot's defaults would take 2 s rising to 15 s per failure.
    assert time.monotonic() - started < 6.0


def test_separator_namespace_and_special_use(testbed: ScalixTestbed, user: DirectoryUser) -> None:
    with login(testbed.imap_port, user.primary_address, user.password) as c:
        assert c.namespace().personal == (("", "/"),)
        c.create_folder("Projects/Größe & Co")
        folders = {name: (flags, delim) for flags, delim, name in c.list_folders()}
    assert {delim for _, delim in folders.values()} == {b"/"}
    assert "Projects/Größe & Co" in folders
    assert b"\\Sent" in folders["Sent Items"][0]
    assert b"\\Trash" in folders["Deleted Items"][0]
    assert b"\\Drafts" in folders["Drafts"][0]
    assert {"Calendar", "Contacts", "Tasks", "Notes", "INBOX"} <= set(folders)


def test_tls_listener_verifies_against_the_test_ca(testbed: ScalixTestbed) -> None:
    ctx = ssl.create_default_context(cafile=str(testbed.ca_file))
    with IMAPClient(
        "127.0.0.1", port=testbed.imaps_port, ssl=True, ssl_context=ctx, timeout=10
    ) as client:
        client.login(
            quote(f"mboxadmin:sxadmin:{testbed.directory().users[2].auth_id}"),
            testbed.admin_password,
        )
        assert client.list_folders()
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(
            "127.0.0.1",
            port=testbed.imaps_port,
            ssl=True,
            ssl_context=ssl.create_default_context(),
            timeout=10,
        )


@pytest.fixture
def ssh(testbed: ScalixTestbed) -> Iterator[paramiko.SSHClient]:
    client = paramiko.SSHClient()
    client.load_host_keys(str(testbed.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=testbed.ssh_port,
        username=testbed.ssh_user,
        key_filename=str(testbed.ssh_key_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
    )
    try:
        yield client
    finally:
        client.close()


def _exec(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=60)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def test_sshd_host_key_matches_fingerprint_and_known_hosts(
    testbed: ScalixTestbed, ssh: paramiko.SSHClient
) -> None:
    transport = ssh.get_transport()
    assert transport is not None
    key = transport.get_remote_server_key()
    assert fingerprint_of(f"{key.get_name()} {key.get_base64()}") == testbed.host_key_fingerprint
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(testbed.known_hosts)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert testbed.host_key_fingerprint in listed.split()
    status, out, _ = _exec(ssh, 'echo "$PATH"; echo "$SXM_SANDBOX_DIRECTORY"; command -v omshowu')
    path, directory, omshowu = out.splitlines()
    assert status == 0
    assert path.split(":")[0] == str(testbed.bin_dir)
    assert directory == str(testbed.directory_path)
    assert omshowu == f"{testbed.bin_dir}/omshowu"


def test_omshowu_over_ssh_lists_users_and_hostile_names_stay_names(
    testbed: ScalixTestbed, ssh: paramiko.SSHClient
) -> None:
    marker = Path(f"/tmp/pwned-{secrets.token_hex(6)}")
    hostile = _new_user(testbed, display=f"o'brien; touch {marker}")
    status, out, err = _exec(ssh, f"sudo -n {testbed.bin_dir}/omshowu -m all")
    assert status == 0, err
    lines = out.splitlines()
    for u in testbed.directory().users:
        assert f"{u.display_name}/{u.mailnode}/CN={u.display_name}" in lines
    assert f"{hostile.display_name}/{hostile.mailnode}/CN={hostile.display_name}" in lines
    import shlex

    status, out, err = _exec(ssh, f"omshowu -n {shlex.quote(hostile.display_name)} -f")
    assert status == 0, err
    assert f"Authentication ID: {hostile.auth_id}" in out
    assert not marker.exists()
    status, _, err = _exec(ssh, "omshowu -n 'Nobody At All' -f")
    assert status != 0
    assert err


def test_destination_accepts_any_login_and_returns_appenduid(testbed: ScalixTestbed) -> None:
    name = f"anyone-{secrets.token_hex(4)}@dest.test"
    with login(testbed.dest_imap_port, name, testbed.dest_password) as c:
        caps = set(c.capabilities())
        assert {b"UIDPLUS", b"MULTIAPPEND", b"LITERAL+", b"SPECIAL-USE"} <= caps
        folders = {n: f for f, _, n in c.list_folders()}
        for folder, flag in [
            ("Sent", b"\\Sent"),
            ("Trash", b"\\Trash"),
            ("Drafts", b"\\Drafts"),
            ("Junk", b"\\Junk"),
            ("Archive", b"\\Archive"),
        ]:
            assert flag in folders[folder]
        when = datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-5)))
        reply = c.append(
            "INBOX", _message("dest"), flags=["\\Seen", "$Forwarded", "Custom_kw"], msg_time=when
        )
        assert re.search(rb"\[APPENDUID \d+ 1\]", reply)
        c.select_folder("INBOX", readonly=True)
        item = c.fetch([1], ["FLAGS", "INTERNALDATE"])[1]
    assert {b"\\Seen", b"$Forwarded", b"Custom_kw"} <= set(item[b"FLAGS"])
    assert item[b"INTERNALDATE"] == when  # same instant; Dovecot may keep another zone
    with (
        pytest.raises(LoginError),
        login(testbed.dest_imap_port, name, "x" + testbed.dest_password),
    ):
        pass


def test_seed_and_source_messages_round_trip(testbed: ScalixTestbed) -> None:
    u = _new_user(testbed)
    when = datetime(2015, 10, 29, 7, 11, 58, tzinfo=timezone(timedelta(hours=2)))
    seeds = [
        SeedMessage("Sent Items", _message("one"), ["\\Seen", "\\X-Forwarded", "$Forwarded"], when),
        SeedMessage("Sent Items", _message("two"), ["X-Scalix-Processed", "\\Flagged"], when),
        SeedMessage("Archive/2015", _message("three"), [], when),
    ]
    testbed.seed_messages(u.display_name, seeds)
    sent = testbed.source_messages(u.primary_address, "Sent Items")
    assert [m.body for m in sent] == [seeds[0].body, seeds[1].body]
    assert sent[0].flags == {"\\Seen", "$Forwarded"}  # \X-Forwarded cannot be stored
    assert sent[1].flags == {"X-Scalix-Processed", "\\Flagged"}
    assert all(m.internaldate == when and m.size == len(m.body) for m in sent)
    assert [m.body for m in testbed.source_messages(u.auth_id, "Archive/2015")] == [seeds[2].body]


def test_add_user_creates_exactly_its_folders_and_refuses_duplicates(
    testbed: ScalixTestbed,
) -> None:
    tag = secrets.token_hex(4)
    u = DirectoryUser(
        f"Few Folders {tag}",
        "branch",
        f"ff{tag}",
        [f"ff.{tag}@example.test"],
        "pw-" + tag,
        folders=[FolderSpec("Sent Items", special="SentItems"), FolderSpec("Projekte/Größe")],
    )
    testbed.add_user(u)
    with login(testbed.imap_port, u.auth_id, u.password) as c:
        names = {n for _, _, n in c.list_folders()}
    assert names == {"INBOX", "Sent Items", "Projekte", "Projekte/Größe"}
    with pytest.raises(ValueError, match="already has"):
        testbed.add_user(u)


def test_make_config_points_at_the_testbed(testbed: ScalixTestbed, tmp_path: Path) -> None:
    path, cfg = testbed.make_config(
        tmp_path,
        destination={"type": "imap", "login_template": "{local_part}-x@dest.test"},
        options={"concurrency": {"users": 2}},
    )
    assert path.exists()
    assert testbed.admin_password not in path.read_text()
    assert testbed.dest_password not in path.read_text()
    assert cfg.source.admin_password.kind == "file"
    assert cfg.source.admin_password.resolve() == testbed.admin_password
    assert cfg.destination.type == "imap"
    assert cfg.destination.password is not None
    assert cfg.destination.password.resolve() == testbed.dest_password
    assert cfg.destination.effective_port == testbed.dest_imap_port
    assert cfg.source.imap.effective_port == testbed.imap_port
    assert cfg.source.ssh.host_key_fingerprint == testbed.host_key_fingerprint
    assert cfg.source.ssh.bin_dir == str(testbed.bin_dir)
    assert cfg.options.concurrency.users == 2
    assert cfg.options.staging_dir == tmp_path / "staging"
    assert cfg.service.restart_command == f"{testbed.bin_dir}/service scalix restart"
    assert "ScalixTestbed(" in repr(testbed)
    assert testbed.admin_password not in repr(testbed)


def test_testbed_stops_every_daemon_when_the_body_fails() -> None:
    """A second, private test bed: an exception inside it must leave no process behind."""
    seen: dict[str, object] = {}

    def body() -> None:
        with running_testbed() as bed:
            seen["workdir"] = bed.workdir
            seen["pids"] = pids = [int(p) for p in _pids_mentioning(str(bed.workdir))]
            seen["children"] = [c for p in pids for c in descendants(p)]
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    workdir, pids, children = seen["workdir"], seen["pids"], seen["children"]
    assert isinstance(workdir, Path)
    assert isinstance(pids, list)
    assert isinstance(children, list)
    assert pids, "the daemons should have been running"
    assert children, "Dovecot should have forked its helper processes"
    time.sleep(0.2)
    alive = [p for p in pids + children if _alive(p)]
    assert alive == []
    assert not workdir.exists()


def _pids_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(entry.name)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
