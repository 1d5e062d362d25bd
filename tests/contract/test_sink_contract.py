"""The contract every destination keeps (run over IMAP/Dovecot, Maildir and mbox)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scalix_migrate.load import load_user
from scalix_migrate.message_identity import fingerprint_of, message_id_of
from scalix_migrate.records import LoadState, SpecialFolder
from scalix_migrate.verify import verify_user
from tests.contract.conftest import Msg, Sink

CEST = timezone(timedelta(hours=2))


def mail(n: int, *, message_id: bool = True, extra: bytes = b"") -> bytes:
    head = b"From: Kim <kim@example.com>\r\nTo: Sam <sam@example.com>\r\n"
    head += f"Subject: message {n}\r\nDate: Mon, 3 Jun 2024 10:{n % 60:02d}:00 +0200\r\n".encode()
    if message_id:
        head += f"Message-ID: <msg-{n}@example.com>\r\n".encode()
    return head + b"\r\n" + extra + f"Body of message {n}.\r\n".encode()


def corpus() -> list[Msg]:
    return [
        Msg(mail(1), frozenset({"\\Seen"}), datetime(2024, 6, 3, 10, 1, 5, tzinfo=CEST)),
        Msg(
            mail(2),
            frozenset({"\\Answered", "\\Flagged", "\\X-Forwarded"}),
            datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC),
        ),
        Msg(
            mail(3, message_id=False),
            frozenset({"\\Seen", "Project_X"}),
            datetime(2020, 2, 29, 23, 59, 59, tzinfo=CEST),
        ),
        Msg(
            mail(4, extra=b"From the start of a line\r\n>From quoted\r\n"),
            frozenset({"\\Draft", "X-Scalix-Processed", "\\X-Has-Attach"}),
            datetime(2019, 12, 31, 12, 0, 0, tzinfo=UTC),
        ),
    ]


def expected_flags(flags: frozenset[str]) -> frozenset[str]:
    out = set(flags) - {"\\X-Has-Attach", "X-Scalix-Processed"}
    if "\\X-Forwarded" in out:
        out = (out - {"\\X-Forwarded"}) | {"$Forwarded"}
    return frozenset(out)


def test_load_keeps_bytes_flags_and_dates(sink: Sink) -> None:
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus())
    sink.stage(cfg, "Sent Items", corpus()[:2], special=SpecialFolder.sent)
    sink.stage(cfg, "Projects/Empty", [])

    result = load_user(cfg, sink.journal, sink.user)

    assert (result.appended, result.failed, result.skipped) == (6, 0, 0)
    assert result.bytes == sum(len(m.body) for m in corpus()) + len(mail(1)) + len(mail(2))
    with sink.open(cfg) as dest:
        sep = dest.layout.separator
        folders = set(dest.list_folders())
        assert {"INBOX", "Sent", f"Projects{sep}Empty"} <= folders
        held = {m.sha256: m for m in dest.messages("INBOX")}
        assert list(dest.messages(f"Projects{sep}Empty")) == []
        assert len(list(dest.messages("Sent"))) == 2
    for m in corpus():
        got = held[hashlib.sha256(m.body).hexdigest()]
        assert got.size == len(m.body)
        assert got.flags - {"\\Recent"} == expected_flags(m.flags)
        assert got.internaldate is not None
        assert got.internaldate.timestamp() == m.internaldate.timestamp()
    assert verify_user(cfg, sink.journal, sink.user).ok


def test_rerun_adds_nothing(sink: Sink) -> None:
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus())
    first = load_user(cfg, sink.journal, sink.user)
    second = load_user(cfg, sink.journal, sink.user)
    assert first.appended == 4
    assert (second.appended, second.already_present, second.folders_created) == (0, 0, 0)
    with sink.open(cfg) as dest:
        assert len(list(dest.messages("INBOX"))) == 4


def test_uidvalidity_change_replans_without_duplicates(sink: Sink) -> None:
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus(), uidvalidity=7)
    assert load_user(cfg, sink.journal, sink.user).appended == 4
    # The source rebuilt the folder: new UIDVALIDITY, new UIDs, one new message.
    sink.stage(
        cfg,
        "INBOX",
        [*corpus(), Msg(mail(9), frozenset(), datetime.now(UTC))],
        uidvalidity=8,
        first_uid=101,
    )
    again = load_user(cfg, sink.journal, sink.user)
    assert again.appended == 1
    with sink.open(cfg) as dest:
        assert len(list(dest.messages("INBOX"))) == 5
    states = sink.journal.counts_by_state(cfg.tenant, sink.user.key)
    assert states == {"loaded": 5, "superseded": 4}
    assert verify_user(cfg, sink.journal, sink.user).ok


def test_crash_between_appending_and_loaded_is_reconciled(sink: Sink) -> None:
    cfg = sink.config()
    twin = mail(20).replace(b"Body", b"Other body")  # same Message-ID as mail(20), same size
    msgs = [
        *corpus(),
        Msg(mail(20), frozenset(), datetime(2021, 5, 5, tzinfo=UTC)),
        Msg(twin, frozenset(), datetime(2021, 5, 5, tzinfo=UTC)),
    ]
    sink.stage(cfg, "INBOX", msgs)
    rows = list(sink.journal.entries(cfg.tenant, sink.user.key))
    by_sha = {r.sha256: r for r in rows}
    # A crashed run: every row marked appending, but only some reached the destination
    # (one of them without a Message-ID, one of the two sharing a Message-ID).
    reached = [msgs[0], msgs[2], msgs[4]]
    with sink.open(cfg) as dest:
        dest.ensure_folder("INBOX")
        for m in reached:
            dest.append("INBOX", m.body, expected_flags(m.flags), m.internaldate)
    sink.journal.set_load_state(
        [r.id for r in rows if r.id is not None], LoadState.appending, dest_folder="INBOX"
    )

    result = load_user(cfg, sink.journal, sink.user)

    assert (result.already_present, result.appended) == (3, 3)
    with sink.open(cfg) as dest:
        held = sorted(m.sha256 or "" for m in dest.messages("INBOX"))
    assert held == sorted(hashlib.sha256(m.body).hexdigest() for m in msgs)
    assert set(sink.journal.counts_by_state(cfg.tenant, sink.user.key)) == {"loaded"}
    assert by_sha  # rows existed before the crash
    assert verify_user(cfg, sink.journal, sink.user).ok


def test_find_matches_by_fingerprint_without_message_id(sink: Sink) -> None:
    cfg = sink.config()
    body = mail(30, message_id=False)
    with sink.open(cfg) as dest:
        dest.ensure_folder("INBOX")
        ident = dest.append("INBOX", body, frozenset(), datetime(2022, 1, 1, tzinfo=UTC))
        assert message_id_of(body) is None
        fp = fingerprint_of(body, len(body))
        found = dest.find("INBOX", message_id=None, size=len(body), fingerprint=fp)
        assert found is not None
        assert ident is None or found == ident
        assert (
            dest.find("INBOX", message_id=None, size=len(body), fingerprint=fp, exclude={found})
            is None
        )
        assert dest.find("INBOX", message_id=None, size=len(body) + 1, fingerprint=fp) is None


def test_rejected_item_is_recorded_and_the_rest_goes_on(sink: Sink) -> None:
    cfg = sink.config(messages={"max_size_bytes": 1000})
    big = Msg(mail(40, extra=b"x" * 2000 + b"\r\n"), frozenset(), datetime.now(UTC))
    sink.stage(cfg, "INBOX", [corpus()[0], big, corpus()[1]])
    result = load_user(cfg, sink.journal, sink.user)
    assert (result.appended, result.failed) == (2, 1)
    assert [f.code for f in result.item_errors] == ["SXM-DST-004"]
    errors = sink.journal.item_errors(cfg.tenant)
    assert [(e.uid, e.error_code) for e in errors] == [(2, "SXM-DST-004")]
    assert verify_user(cfg, sink.journal, sink.user).ok


def test_deleted_messages_are_skipped_by_default(sink: Sink) -> None:
    cfg = sink.config()
    gone = Msg(mail(50), frozenset({"\\Deleted", "\\Seen"}), datetime.now(UTC))
    sink.stage(cfg, "INBOX", [gone, corpus()[0]])
    result = load_user(cfg, sink.journal, sink.user)
    assert (result.appended, result.skipped) == (1, 1)


@pytest.mark.parametrize("tamper", ["missing", "extra"])
def test_verify_reports_differences(sink: Sink, tamper: str) -> None:
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus()[:2])
    load_user(cfg, sink.journal, sink.user)
    if tamper == "extra":
        with sink.open(cfg) as dest:
            dest.append("INBOX", mail(60), frozenset(), datetime.now(UTC))
    else:
        sink.stage(
            cfg,
            "INBOX",
            [Msg(mail(61), frozenset(), datetime.now(UTC))],
            uidvalidity=next(
                iter([r.uidvalidity for r in sink.journal.folder_rows(cfg.tenant, sink.user.key)])
            ),
            first_uid=3,
        )
        row = next(e for e in sink.journal.entries(cfg.tenant, sink.user.key) if e.uid == 3)
        assert row.id is not None
        sink.journal.set_load_state([row.id], LoadState.loaded, dest_folder="INBOX")
    result = verify_user(cfg, sink.journal, sink.user)
    assert [d.kind for d in result.differences] == [tamper]
    inbox = next(f for f in result.folders if f.dest_folder == "INBOX")
    assert getattr(inbox, tamper) == 1
