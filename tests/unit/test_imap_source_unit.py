"""ScalixMailbox and the LIST parser against captured Scalix server lines (scalix.md §3.1)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import TransientError, UserError
from scalix_migrate.extract import extract_user
from scalix_migrate.imapconnect import astring
from scalix_migrate.ratelimit import HostLimiter, limiter_for
from scalix_migrate.records import FetchedMessage, LoadState, ScalixUser, SpecialFolder
from scalix_migrate.scalix.imap_source import (
    FetchFailure,
    MessageInfo,
    _batches,
)
from scalix_migrate.scalix.listparse import (
    ListParseError,
    parse_list_item,
    parse_list_response,
)
from scalix_migrate.staging import StagingStore, sha256_hex
from scalix_migrate.state import Journal
from scalix_migrate.user_context import UserContext, open_source
from tests.unit.scripted_imap import SCALIX_LIST, Msg, Script, ScriptedIMAP

USER = ScalixUser(
    display_name="Kim Lee",
    mailnode="sales",
    auth_id="klee",
    addresses=("kim.lee@example.test", "kim@example.test"),
)


def make_cfg(tmp_path: Path, port: int, **imap: Any) -> TenantConfig:
    pw = tmp_path / "admin.pw"
    pw.write_text("sup3r secret\n")
    return TenantConfig.model_validate(
        {
            "tenant": "acme",
            "source": {
                "server": "127.0.0.1",
                "server_names": ["sales"],
                "admin_user": "Scalix Admin",
                "admin_password": f"file:{pw}",
                "test_user": "kim.lee@example.test",
                "imap": {"port": port, "tls": "none", "timeout_s": 5, **imap},
            },
            "destination": {"type": "mbox", "path": str(tmp_path / "out")},
            "options": {"staging_dir": str(tmp_path / "staging")},
        }
    )


# --- LIST parsing -------------------------------------------------------------------------


def test_captured_scalix_list_lines_parse_with_equals_attributes() -> None:
    folders = parse_list_response(SCALIX_LIST)
    by_name = {f.name: f for f in folders}
    assert set(by_name) == {"Sent Items", "INBOX", "парпа_па777рпар_вап", "Calendar"}
    sent = by_name["Sent Items"]
    assert sent.special is SpecialFolder.sent
    assert "\\X-DirectRef=00011a035dc33e08" in sent.attributes
    assert sent.delimiter == "/"
    assert sent.selectable
    assert by_name["INBOX"].special is SpecialFolder.inbox
    cyr = by_name["парпа_па777рпар_вап"]
    assert cyr.raw_name == "&BD8EMARABD8EMA-_&BD8EMA-777&BEAEPwQwBEA-_&BDIEMAQ,-"
    cal = by_name["Calendar"]
    assert cal.folder_class == "IPF.Appointment"
    assert cal.special is SpecialFolder.calendar


def test_shared_roots_are_left_out_unless_configured() -> None:
    names = {f.name for f in parse_list_response(SCALIX_LIST, include_shared=True)}
    assert {"Other Users", "Public Folders", "Public Folders/Team"} <= names
    roots = {f.name: f for f in parse_list_response(SCALIX_LIST, include_shared=True)}
    assert roots["Other Users"].selectable is False


@pytest.mark.parametrize(
    ("line", "name", "special", "selectable"),
    [
        (
            rb'(\HasNoChildren \Sent) "/" "Gesendete Objekte"',
            "Gesendete Objekte",
            "SentItems",
            True,
        ),
        (rb'(\Trash) "/" Trash', "Trash", "DeletedItems", True),
        (rb'(\Drafts \HasNoChildren) "/" Drafts', "Drafts", "Drafts", True),
        (rb'(\Junk) "/" Spam', "Spam", "Junk", True),
        (rb'(\Noselect \HasChildren) "/" Archive', "Archive", None, False),
        (rb"() NIL 2015", "2015", None, True),
        (rb'() "/" "say \"hi\""', 'say "hi"', None, True),
        (rb'() "." "INBOX.Projekte.Gr&APY-&AN8-e"', "INBOX/Projekte/Größe", None, True),
    ],
)
def test_list_variants(line: bytes, name: str, special: str | None, selectable: bool) -> None:
    folder = parse_list_item(line)
    assert folder.name == name
    assert (folder.special.value if folder.special else None) == special
    assert folder.selectable is selectable


def test_list_name_sent_as_literal() -> None:
    folder = parse_list_item((rb'(\HasNoChildren) "/" {13}', b"Projekte 2024"))
    assert folder.name == "Projekte 2024"
    # imaplib leaves the remainder of the line after a literal as an empty item
    assert len(parse_list_response([(rb'() "/" {3}', b"Foo"), b""])) == 1


def test_garbage_list_line_is_reported_with_the_line() -> None:
    with pytest.raises(ListParseError, match="no-parens"):
        parse_list_item(b'no-parens "/" x')


# --- login form and quoting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ("email", "mboxadmin:Scalix Admin:kim.lee@example.test"),
        ("auth_id", "mboxadmin:Scalix Admin:klee"),
        ("display_name", "mboxadmin:Scalix Admin:Kim Lee"),
    ],
)
def test_login_name_forms(tmp_path: Path, identity: str, expected: str) -> None:
    cfg = make_cfg(tmp_path, 143, login_identity=identity)
    assert UserContext.of(cfg, USER).source_login == expected


def test_login_name_falls_back_when_identity_unknown(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, 143, login_identity="auth_id")
    bare = ScalixUser(display_name="No Auth", mailnode="m", addresses=("na@example.test",))
    assert UserContext.of(cfg, bare).source_login == "mboxadmin:Scalix Admin:na@example.test"


def test_astring_quotes_ascii_and_uses_literals_otherwise() -> None:
    assert astring('mboxadmin:A B:x"y\\z') == (b'"mboxadmin:A B:x\\"y\\\\z"', None)
    assert astring("mboxadmin:admin:Jürgen") == (b"", "mboxadmin:admin:Jürgen".encode())


@pytest.mark.parametrize("literal_plus", [False, True])
def test_login_sends_quoted_name_and_non_ascii_as_literal(
    tmp_path: Path, literal_plus: bool
) -> None:
    user = ScalixUser(display_name="Jürgen Groß", mailnode="sales", addresses=())
    script = Script(literal_plus=literal_plus)
    with ScriptedIMAP(script) as server:
        cfg = make_cfg(tmp_path, server.port, login_identity="display_name")
        with open_source(cfg, user) as mbox:
            assert mbox.client.has_capability("X-SCALIX-1")
        assert server.login_user == (
            "<<mboxadmin:Scalix Admin:Jürgen Groß>> ".encode() + b'"sup3r secret"'
        )


def test_refused_login_is_a_user_error_naming_the_user_not_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with ScriptedIMAP(Script(admin_password="other")) as server:
        cfg = make_cfg(tmp_path, server.port)
        with pytest.raises(UserError) as info, open_source(cfg, USER):
            pass
    err = info.value
    assert err.code == "SXM-IMAP-002"
    assert err.user == "kim.lee@example.test"
    assert "LOGIN failure, user name or password rejected" in str(err)
    assert "Kim Lee" in str(err)
    assert "sup3r secret" not in str(err)
    assert "sup3r secret" not in caplog.text
    assert b'LOGIN "mboxadmin:Scalix Admin:kim.lee@example.test" "sup3r secret"' in b" ".join(
        server.commands
    )


def test_unreachable_server_is_transient(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_cfg(tmp_path, port)
    with pytest.raises(TransientError) as info, open_source(cfg, USER):
        pass
    assert info.value.code == "SXM-IMAP-001"


# --- reading ------------------------------------------------------------------------------


def _mail(i: int, size: int = 0) -> bytes:
    return b"Subject: m%d\r\nMessage-ID: <m%d@x>\r\n\r\n" % (i, i) + b"x" * size + b"\r\n"


def test_examine_fetch_normalises_scalix_flags_and_dates(tmp_path: Path) -> None:
    msgs = [
        Msg(1, _mail(1)),
        Msg(2, _mail(2), flags=r"\Seen \X-Has-Attach X-Scalix-Processed"),
        Msg(3, _mail(3), flags="", internaldate="01-Jan-2020 23:59:59 +0100"),
    ]
    with ScriptedIMAP(Script(messages={"INBOX": msgs})) as server:
        cfg = make_cfg(tmp_path, server.port)
        with open_source(cfg, USER) as mbox:
            folders = {f.name: f for f in mbox.list_folders()}
            assert "Other Users" not in folders
            assert "Public Folders/Team" not in folders
            inbox = folders["INBOX"]
            assert mbox.examine(inbox) == (42, 3)
            assert server.readonly, "folders must be opened with EXAMINE"
            uids = mbox.uids_above(inbox, 1)
            assert uids == [2, 3]
            infos = list(mbox.message_info(inbox, [1, *uids]))
            got = [m for batch in mbox.fetch(inbox, infos) for m in batch]
            known_flags = mbox.flags(inbox, 2)
    assert known_flags == {
        1: frozenset({"\\Seen", "$Forwarded", "\\X-Forwarded"}),
        2: frozenset({"\\Seen", "\\X-Has-Attach", "X-Scalix-Processed"}),
    }
    assert b"UID FETCH 1:2 (UID FLAGS)" in b" ".join(server.commands)
    assert all(isinstance(m, FetchedMessage) for m in got)
    first, second, third = got
    assert isinstance(first, FetchedMessage)
    assert isinstance(third, FetchedMessage)
    assert first.flags == frozenset({"\\Seen", "$Forwarded", "\\X-Forwarded"})
    assert isinstance(second, FetchedMessage)
    assert second.flags == frozenset({"\\Seen", "\\X-Has-Attach", "X-Scalix-Processed"})
    assert third.flags == frozenset()
    assert first.internaldate == datetime(
        2017, 3, 22, 7, 35, 48, tzinfo=timezone(timedelta(hours=-4))
    )
    assert third.internaldate.astimezone(UTC) == datetime(2020, 1, 1, 22, 59, 59, tzinfo=UTC)
    assert first.body == _mail(1)
    assert first.size == len(_mail(1))
    assert not any(b"BODY[]" in c.replace(b"BODY.PEEK[]", b"") for c in server.commands)


def test_a_message_the_server_refuses_is_a_fetch_failure_and_the_rest_arrive(
    tmp_path: Path,
) -> None:
    msgs = [Msg(u, _mail(u)) for u in (1, 2, 3, 4)]
    script = Script(messages={"INBOX": msgs}, refuse_body_uids={2}, missing_body_uids={4})
    with ScriptedIMAP(script) as server:
        cfg = make_cfg(tmp_path, server.port)
        with open_source(cfg, USER) as mbox:
            inbox = next(f for f in mbox.list_folders() if f.name == "INBOX")
            infos = list(mbox.message_info(inbox, mbox.uids_above(inbox, 0)))
            got = [m for batch in mbox.fetch(inbox, infos) for m in batch]
    assert [m.uid for m in got] == [1, 2, 3, 4]
    assert [type(m).__name__ for m in got] == [
        "FetchedMessage",
        "FetchFailure",
        "FetchedMessage",
        "FetchFailure",
    ]
    failure = got[1]
    assert isinstance(failure, FetchFailure)
    assert "cannot be read" in failure.reason


def test_extract_retries_a_message_the_server_refused_once(tmp_path: Path) -> None:
    """Run 1: Scalix refuses UID 2 (NO), the cursor moves past it, the row is failed.
    Run 2 (same UIDVALIDITY): UID 2 is asked for again first and becomes a staged row."""
    msgs = [Msg(1, _mail(1)), Msg(2, _mail(2, size=300)), Msg(3, _mail(3))]
    script = Script(messages={"INBOX": msgs}, refuse_body_uids={2}, connections=2)
    with ScriptedIMAP(script) as server, Journal.open(directory=tmp_path / "state") as journal:
        cfg = make_cfg(tmp_path, server.port)
        first = extract_user(cfg, journal, USER)
        assert (first.found, first.staged, first.failed) == (3, 2, 1)
        rows = {e.uid: e for e in journal.entries("acme", USER.key)}
        assert rows[2].load_state is LoadState.failed
        assert rows[2].sha256 == "unfetched-42-2"
        assert [f.uid for f in journal.item_errors("acme")] == [2]
        cursors = {r.folder: r.highest_uid for r in journal.folder_rows("acme", USER.key)}
        assert cursors["INBOX"] == 3
        n_first = len(server.commands)

        script.refuse_body_uids.clear()  # the server can read it now
        second = extract_user(cfg, journal, USER, phase="delta")
        retry_commands = server.commands[n_first:]

    assert (second.found, second.retried, second.recovered) == (0, 1, 1)
    assert (second.staged, second.failed, second.item_errors) == (1, 0, ())
    # Only UID 2 was fetched again, with BODY.PEEK[]; nothing above the cursor.
    body_fetches = [c for c in retry_commands if b"BODY.PEEK[]" in c]
    assert len(body_fetches) == 1
    assert b"UID FETCH 2 " in body_fetches[0]
    rows = {e.uid: e for e in journal.entries("acme", USER.key)}
    assert len(rows) == 3
    row = rows[2]
    assert row.load_state is LoadState.staged
    assert row.sha256 == sha256_hex(_mail(2, size=300))
    assert row.size == len(_mail(2, size=300))
    assert row.message_id == "<m2@x>"
    assert row.flags == frozenset({"\\Seen", "$Forwarded", "\\X-Forwarded"})
    assert journal.item_errors("acme") == []
    store = StagingStore(cfg.options.staging_dir, "acme", USER.key)
    assert store.get(row.sha256) == _mail(2, size=300)


def test_batches_are_bounded_by_count_and_bytes() -> None:
    now = datetime.now(UTC)
    infos = [MessageInfo(u, s, frozenset(), now) for u, s in enumerate([10, 10, 10, 500, 10], 1)]
    assert list(_batches(infos, max_count=2, max_bytes=1000)) == [[1, 2], [3, 4], [5]]
    assert list(_batches(infos, max_count=10, max_bytes=100)) == [[1, 2, 3], [4], [5]]


# --- limiter ------------------------------------------------------------------------------


def test_limiter_caps_concurrent_connections() -> None:
    limiter = HostLimiter("h", connections=2, connects_per_second=1000)
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal peak
        with limiter.connection(wait_s=10):
            with lock:
                peak = max(peak, limiter.in_use)
            time.sleep(0.05)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak == 2
    assert limiter.in_use == 0


def test_limiter_spaces_connects_and_times_out() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    limiter = HostLimiter(
        "h", connections=1, connects_per_second=4, clock=lambda: clock[0], sleep=sleep
    )
    for _ in range(3):
        with limiter.connection():
            pass
    assert slept == pytest.approx([0.25, 0.25])
    with (
        limiter.connection(),
        pytest.raises(TransientError, match="no free IMAP connection slot"),
        limiter.connection(wait_s=0.01),
    ):
        pass


def test_registry_returns_one_limiter_per_host() -> None:
    a = limiter_for("Scalix.Example.Test", connections=3, connects_per_second=2)
    b = limiter_for("scalix.example.test", connections=9, connects_per_second=9)
    assert a is b
    assert a.connections == 3
