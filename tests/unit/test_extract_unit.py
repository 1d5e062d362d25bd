"""extract_user and groupware against a small stateful fake of ScalixMailbox."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate import staging
from scalix_migrate.config import FolderOptions, TenantConfig
from scalix_migrate.errors import TransientError, UserError
from scalix_migrate.extract import extract_user, item_class_of, select_folders
from scalix_migrate.groupware import GroupwareOutcome, export_item
from scalix_migrate.records import (
    FetchedMessage,
    ItemClass,
    LoadState,
    ScalixUser,
    SourceFolder,
    SpecialFolder,
)
from scalix_migrate.scalix.imap_source import FetchFailure, MessageInfo, _batches
from scalix_migrate.staging import StagingStore, sha256_hex
from scalix_migrate.state import Journal

USER = ScalixUser(display_name="Kim Lee", mailnode="sales", addresses=("kim@example.test",))
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@dataclass
class FakeFolder:
    folder: SourceFolder
    uidvalidity: int = 7
    messages: dict[int, tuple[bytes, frozenset[str], datetime]] = field(default_factory=dict)
    unreadable: set[int] = field(default_factory=set)

    def add(self, body: bytes, flags: Sequence[str] = (), when: datetime = T0) -> int:
        uid = max(self.messages, default=0) + 1
        self.messages[uid] = (body, frozenset(flags), when)
        return uid


def folder(name: str, **kw: Any) -> SourceFolder:
    return SourceFolder(name=name, raw_name=name, delimiter="/", attributes=frozenset(), **kw)


@dataclass
class FakeServer:
    folders: list[FakeFolder]
    batch_limit: tuple[int, int] = (200, 1 << 24)
    fail_after_batches: int | None = None  # raise TransientError on this fetch batch
    batches_served: int = 0
    connects: int = 0

    def box(self, f: SourceFolder) -> FakeFolder:
        return next(x for x in self.folders if x.folder.name == f.name)


class FakeMailbox:
    """The part of ScalixMailbox that extract_user uses, over FakeServer's dicts."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def __enter__(self) -> FakeMailbox:
        self.server.connects += 1
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def list_folders(self) -> list[SourceFolder]:
        return [f.folder for f in self.server.folders]

    def examine(self, f: SourceFolder) -> tuple[int, int]:
        box = self.server.box(f)
        return box.uidvalidity, len(box.messages)

    def flags(self, f: SourceFolder, up_to_uid: int) -> dict[int, frozenset[str]]:
        return {u: m[1] for u, m in self.server.box(f).messages.items() if u <= up_to_uid}

    def uids_above(self, f: SourceFolder, uid: int) -> list[int]:
        return sorted(u for u in self.server.box(f).messages if u > uid)

    def message_info(self, f: SourceFolder, uids: Sequence[int]) -> Iterator[MessageInfo]:
        box = self.server.box(f)
        for u in uids:
            if u not in box.messages:
                continue  # expunged: the real adapter leaves it out too
            body, flags, when = box.messages[u]
            yield MessageInfo(u, len(body), flags, when)

    def fetch(
        self, f: SourceFolder, infos: Sequence[MessageInfo]
    ) -> Iterator[list[FetchedMessage | FetchFailure]]:
        box = self.server.box(f)
        by_uid = {i.uid: i for i in infos}
        for group in _batches(infos, *self.server.batch_limit):
            self.server.batches_served += 1
            if self.server.batches_served == self.server.fail_after_batches:
                raise TransientError("connection dropped", code="SXM-IMAP-001")
            out: list[FetchedMessage | FetchFailure] = []
            for u in group:
                if u in box.unreadable:
                    out.append(FetchFailure(u, by_uid[u].size, "server said: NO"))
                    continue
                body, flags, when = box.messages[u]
                out.append(FetchedMessage(u, flags, when, len(body), body))
            yield out


def make_cfg(tmp_path: Path, **options: Any) -> TenantConfig:
    imap = options.pop("imap", {})
    return TenantConfig.model_validate(
        {
            "tenant": "acme",
            "allow_inline_secrets": True,
            "source": {
                "server": "fake.example.test",
                "server_names": ["sales"],
                "admin_user": "sxadmin",
                "admin_password": "pw",
                "test_user": "kim@example.test",
                "imap": {"tls": "none", **imap},
            },
            "destination": {"type": "mbox", "path": str(tmp_path / "out")},
            "options": {"staging_dir": str(tmp_path / "staging"), **options},
        }
    )


def mail(i: int, *, mid: str | None = "auto", extra: bytes = b"") -> bytes:
    head = b"Subject: message %d\r\n" % i
    if mid == "auto":
        head += b"Message-ID: <m%d@example.test>\r\n" % i
    elif mid is not None:
        head += b"Message-ID: " + mid.encode() + b"\r\n"
    return head + b"\r\nbody %d\r\n" % i + extra


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(directory=tmp_path / "state") as j:
        yield j


def run(cfg: TenantConfig, journal: Journal, server: FakeServer, **kw: Any) -> Any:
    return extract_user(cfg, journal, USER, mailbox=lambda c, u: FakeMailbox(server), **kw)


def test_full_extract_stages_every_message_once_and_records_folders(
    tmp_path: Path, journal: Journal
) -> None:
    inbox = FakeFolder(folder("INBOX", special=SpecialFolder.inbox))
    inbox.add(mail(1), ["\\Seen", "$Forwarded", "\\X-Forwarded", "Projekt-A"])
    inbox.add(mail(2, mid=None))
    inbox.add(mail(3, mid="<dup@example.test>"))
    inbox.add(mail(4, mid="<dup@example.test>"))
    inbox.add(mail(1), ["\\Seen"])  # identical bytes: one staged file, two ledger rows
    nested = FakeFolder(folder("INBOX/Projekte/Größe"))
    nested.add(mail(9))
    empty = FakeFolder(folder("Leer"))
    noselect = FakeFolder(folder("Archiv", selectable=False))
    server = FakeServer([inbox, nested, empty, noselect])
    cfg = make_cfg(tmp_path)

    result = run(cfg, journal, server)

    assert (result.folders, result.found, result.staged, result.failed) == (3, 6, 6, 0)
    assert result.empty_folders == ("Leer",)
    rows = list(journal.entries("acme", USER.key))
    assert len(rows) == 6
    by_uid = {(r.folder, r.uid): r for r in rows}
    assert by_uid["INBOX", 1].flags == {"\\Seen", "$Forwarded", "\\X-Forwarded", "Projekt-A"}
    assert by_uid["INBOX", 2].message_id is None
    assert by_uid["INBOX", 3].message_id == by_uid["INBOX", 4].message_id == "<dup@example.test>"
    assert by_uid["INBOX", 1].sha256 == by_uid["INBOX", 5].sha256
    assert by_uid["INBOX", 1].internaldate == T0
    store = StagingStore(cfg.options.staging_dir, "acme", USER.key)
    assert store.get(by_uid["INBOX/Projekte/Größe", 1].sha256) == mail(9)
    folders = {r.folder: r for r in journal.folder_rows("acme", USER.key)}
    assert set(folders) == {"INBOX", "INBOX/Projekte/Größe", "Leer"}
    assert folders["INBOX"].highest_uid == 5
    assert folders["INBOX"].special == "Inbox"
    assert folders["Leer"].highest_uid == 0
    assert server.connects == 1


def test_each_batch_is_one_journal_transaction(tmp_path: Path, journal: Journal) -> None:
    inbox = FakeFolder(folder("INBOX"))
    for i in range(7):
        inbox.add(mail(i))
    calls: list[int] = []
    original = journal.record_batch

    def spy(*a: Any, **kw: Any) -> Any:
        calls.append(len(a[3]))
        return original(*a, **kw)

    journal.record_batch = spy  # type: ignore[method-assign]
    cfg = make_cfg(tmp_path, imap={"fetch_batch_messages": 3})
    run(cfg, journal, FakeServer([inbox]))
    assert calls == [3, 3, 1]


def test_second_run_fetches_only_new_uids_and_refreshes_flags(
    tmp_path: Path, journal: Journal
) -> None:
    inbox = FakeFolder(folder("INBOX"))
    first = inbox.add(mail(1))
    inbox.add(mail(2))
    server = FakeServer([inbox])
    cfg = make_cfg(tmp_path)
    run(cfg, journal, server)
    again = run(cfg, journal, server, phase="delta")
    assert (again.found, again.staged, again.flags_refreshed) == (0, 0, 0)

    body, _, when = inbox.messages[first]
    inbox.messages[first] = (body, frozenset({"\\Seen", "$Label1"}), when)
    inbox.add(mail(3))
    delta = run(cfg, journal, server, phase="delta")
    assert (delta.found, delta.staged, delta.flags_refreshed) == (1, 1, 1)
    rows = {r.uid: r for r in journal.entries("acme", USER.key)}
    assert len(rows) == 3
    assert rows[first].flags == {"\\Seen", "$Label1"}


def test_uidvalidity_change_replans_without_duplicates(tmp_path: Path, journal: Journal) -> None:
    inbox = FakeFolder(folder("INBOX"))
    for i in range(3):
        inbox.add(mail(i))
    server = FakeServer([inbox])
    cfg = make_cfg(tmp_path)
    run(cfg, journal, server)
    ids = [e.id for e in journal.entries("acme", USER.key) if e.id is not None]
    journal.set_load_state(ids, LoadState.loaded, dest_folder="INBOX", dest_uid="x")

    # The server rebuilt the folder: new UIDVALIDITY, new UIDs, one new message.
    rebuilt = FakeFolder(folder("INBOX"), uidvalidity=99)
    for i in range(3):
        rebuilt.add(mail(i))
    rebuilt.add(mail(3))
    server.folders = [rebuilt]
    result = run(cfg, journal, server)

    assert result.replanned_folders == ("INBOX",)
    states = journal.counts_by_state("acme", USER.key)
    assert states == {"superseded": 3, "loaded": 3, "staged": 1}
    current = [e for e in journal.entries("acme", USER.key) if e.uidvalidity == 99]
    assert len(current) == 4


def test_dropped_connection_mid_folder_resumes_from_cursor(
    tmp_path: Path, journal: Journal
) -> None:
    inbox = FakeFolder(folder("INBOX"))
    for i in range(10):
        inbox.add(mail(i))
    server = FakeServer([inbox], batch_limit=(3, 1 << 24), fail_after_batches=3)
    cfg = make_cfg(tmp_path, imap={"fetch_batch_messages": 3})
    with pytest.raises(TransientError):
        run(cfg, journal, server)
    rows = journal.folder_rows("acme", USER.key)
    assert rows[0].highest_uid == 6  # two batches committed, the third was in flight
    assert len(list(journal.entries("acme", USER.key))) == 6

    server.fail_after_batches = None
    result = run(cfg, journal, server)
    assert result.found == 4
    uids = [e.uid for e in journal.entries("acme", USER.key)]
    assert uids == list(range(1, 11))


def test_filters_and_unreadable_messages_are_recorded_not_dropped(
    tmp_path: Path, journal: Journal
) -> None:
    inbox = FakeFolder(folder("INBOX"))
    old = inbox.add(mail(1), when=T0 - timedelta(days=400))
    big = inbox.add(mail(2, extra=b"x" * 5000))
    bad = inbox.add(mail(3))
    ok = inbox.add(mail(4))
    gone = inbox.add(mail(5), ["\\Deleted"])
    inbox.unreadable.add(bad)
    cfg = make_cfg(tmp_path, messages={"since": "2024-01-01", "max_size_bytes": 1000})
    result = run(cfg, journal, FakeServer([inbox]))

    assert (result.found, result.staged, result.skipped, result.failed) == (5, 1, 3, 1)
    rows = {e.uid: e for e in journal.entries("acme", USER.key)}
    assert rows[old].load_state is LoadState.skipped
    assert rows[big].load_state is LoadState.skipped
    assert rows[gone].load_state is LoadState.skipped
    assert rows[bad].load_state is LoadState.failed
    assert rows[ok].load_state is LoadState.staged
    codes = {(p.uid, p.code) for p in result.item_errors}
    assert codes == {(big, "SXM-IMAP-006"), (bad, "SXM-IMAP-004")}
    failures = journal.item_errors("acme")
    assert [(f.folder, f.uid, f.error_code) for f in failures] == [("INBOX", bad, "SXM-IMAP-004")]
    assert journal.folder_rows("acme", USER.key)[0].highest_uid == gone


def test_user_without_message_store_is_an_empty_mailbox(tmp_path: Path, journal: Journal) -> None:
    def refused(cfg: TenantConfig, user: ScalixUser) -> FakeMailbox:
        raise UserError("refused", code="SXM-IMAP-002", user=user.key)

    cfg = make_cfg(tmp_path)
    nostore = ScalixUser(
        display_name="New Hire",
        mailnode="sales",
        addresses=("new@x.test",),
        has_message_store=False,
    )
    result = extract_user(cfg, journal, nostore, mailbox=refused)
    assert result.no_message_store
    assert (result.folders, result.found) == (0, 0)
    with pytest.raises(UserError):
        extract_user(cfg, journal, USER, mailbox=refused)


# --- classification, folder selection, groupware -----------------------------------------------


@pytest.mark.parametrize(
    ("header", "folder_class", "expected"),
    [
        ("IPM.Appointment", None, ItemClass.appointment),
        ("IPM.Contact", "IPF.Note", ItemClass.contact),
        ("IPM.DistList", None, ItemClass.contact),
        ("IPM.TaskRequest.Accept", None, ItemClass.task),
        ("IPM.StickyNote", None, ItemClass.note),
        ("IPM.Activity", None, ItemClass.journal),
        ("IPM.Schedule.Meeting.Request", "IPF.Note", ItemClass.mail),
        (None, "IPF.Appointment", ItemClass.appointment),
        (None, "IPF.Contact", ItemClass.contact),
        (None, None, ItemClass.mail),
    ],
)
def test_item_class(header: str | None, folder_class: str | None, expected: ItemClass) -> None:
    assert item_class_of(header, folder_class) is expected


def test_select_folders_include_exclude_fnmatch() -> None:
    found = [folder(n) for n in ("INBOX", "INBOX/Alt", "Junk", "Projekte/Größe")]
    found.append(folder("Root", selectable=False))
    opts = FolderOptions(include=["INBOX*", "Projekte/*"], exclude=["INBOX/Alt"])
    assert [f.name for f in select_folders(found, opts)] == ["INBOX", "Projekte/Größe"]
    assert len(select_folders(found, FolderOptions())) == 4


CAL = (
    b"X-Scalix-Class: IPM.Appointment\r\nSubject: Meeting\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nsee you\r\n"
    b"--b\r\nContent-Type: application/rtf\r\n\r\n{\\rtf1}\r\n"
    b'--b\r\nContent-Type: text/calendar; method=REQUEST; name="meeting.ics"; charset=UTF-8\r\n'
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:Besprechung \xc3\xbc\r\nEND:VEVENT\r\n"
    b"END:VCALENDAR\r\n--b--\r\n"
)
CONTACT_VCF = (
    b"X-Scalix-Class: IPM.Contact\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="c"\r\n\r\n'
    b"--c\r\nContent-Type: application/scalix-properties\r\n\r\n<props/>\r\n"
    b"--c\r\nContent-Type: text/x-vcard\r\n\r\nBEGIN:VCARD\r\nFN:Kim Lee\r\nEND:VCARD\r\n--c--\r\n"
)
CONTACT_PROPS = (
    b"X-Scalix-Class: IPM.Contact\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: application/scalix-properties\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    b"<props/>\r\n"
)


def test_groupware_parts_are_exported(tmp_path: Path) -> None:
    out = export_item(
        CAL,
        sha256="a" * 64,
        item_class=ItemClass.appointment,
        folder="Calendar",
        user_root=tmp_path,
    )
    assert out is GroupwareOutcome.ics
    ics = (tmp_path / "groupware" / "Calendar" / ("a" * 64 + ".ics")).read_bytes()
    assert ics.startswith(b"BEGIN:VCALENDAR")
    assert "Besprechung ü".encode() in ics
    out = export_item(
        CONTACT_VCF,
        sha256="b" * 64,
        item_class=ItemClass.contact,
        folder="Contacts",
        user_root=tmp_path,
    )
    assert out is GroupwareOutcome.vcf
    assert (
        (tmp_path / "groupware" / "Contacts" / ("b" * 64 + ".vcf"))
        .read_bytes()
        .startswith(b"BEGIN:VCARD")
    )
    out = export_item(
        CONTACT_PROPS,
        sha256="c" * 64,
        item_class=ItemClass.contact,
        folder="Contacts",
        user_root=tmp_path,
    )
    assert out is GroupwareOutcome.properties_only
    assert (
        export_item(
            mail(1), sha256="d" * 64, item_class=ItemClass.mail, folder="INBOX", user_root=tmp_path
        )
        is None
    )


def test_extract_counts_groupware(tmp_path: Path, journal: Journal) -> None:
    cal = FakeFolder(
        folder("Calendar", special=SpecialFolder.calendar, folder_class="IPF.Appointment")
    )
    cal.add(CAL)
    contacts = FakeFolder(folder("Contacts", folder_class="IPF.Contact"))
    contacts.add(CONTACT_VCF)
    contacts.add(CONTACT_PROPS)
    cfg = make_cfg(tmp_path)
    result = run(cfg, journal, FakeServer([cal, contacts]))
    assert (result.ics_exported, result.vcf_exported, result.properties_only) == (1, 1, 1)
    assert result.staged == 3  # groupware items stay messages too
    classes = sorted(e.item_class.value for e in journal.entries("acme", USER.key))
    assert classes == ["appointment", "contact", "contact"]


# --- retry of messages that failed to fetch --------------------------------------------------


def test_failed_fetch_is_retried_on_the_next_run_and_becomes_staged(
    tmp_path: Path, journal: Journal
) -> None:
    inbox = FakeFolder(folder("INBOX"))
    inbox.add(mail(1))
    bad = inbox.add(mail(2, mid="<late@example.test>"), ["\\Seen"])
    inbox.add(mail(3))
    inbox.unreadable.add(bad)
    server = FakeServer([inbox])
    cfg = make_cfg(tmp_path)
    first = run(cfg, journal, server)
    assert (first.staged, first.failed, first.retried) == (2, 1, 0)
    assert journal.folder_rows("acme", USER.key)[0].highest_uid == 3  # moved past it

    # Still refused: stays failed, counted again, nothing else fetched.
    again = run(cfg, journal, server, phase="delta")
    assert (again.found, again.retried, again.recovered, again.failed) == (0, 1, 0, 1)
    assert [(p.uid, p.code) for p in again.item_errors] == [(bad, "SXM-IMAP-004")]
    assert [f.uid for f in journal.item_errors("acme")] == [bad]

    inbox.unreadable.clear()
    body, _, when = inbox.messages[bad]
    inbox.messages[bad] = (body, frozenset({"\\Seen", "\\Flagged"}), when)
    third = run(cfg, journal, server, phase="delta")
    assert (third.found, third.retried, third.recovered) == (0, 1, 1)
    assert (third.staged, third.failed, third.item_errors) == (1, 0, ())
    rows = {e.uid: e for e in journal.entries("acme", USER.key)}
    assert len(rows) == 3
    row = rows[bad]
    assert row.load_state is LoadState.staged
    assert row.sha256 == sha256_hex(body)
    assert (row.size, row.message_id) == (len(body), "<late@example.test>")
    assert row.flags == {"\\Seen", "\\Flagged"}
    assert journal.item_errors("acme") == []
    assert StagingStore(cfg.options.staging_dir, "acme", USER.key).get(row.sha256) == body

    fourth = run(cfg, journal, server, phase="delta")
    assert (fourth.retried, fourth.staged) == (0, 0)  # nothing left to retry


def test_retry_of_an_expunged_message_keeps_it_failed_with_the_reason(
    tmp_path: Path, journal: Journal
) -> None:
    inbox = FakeFolder(folder("INBOX"))
    inbox.add(mail(1))
    bad = inbox.add(mail(2))
    inbox.unreadable.add(bad)
    server = FakeServer([inbox])
    cfg = make_cfg(tmp_path)
    run(cfg, journal, server)
    del inbox.messages[bad]
    again = run(cfg, journal, server, phase="delta")
    assert (again.retried, again.recovered, again.failed) == (0, 0, 1)
    (err,) = journal.item_errors("acme")
    assert (err.uid, err.error_code, err.error_detail) == (
        bad,
        "SXM-IMAP-004",
        "no longer on the source",
    )


def test_recovered_message_loaded_before_a_replan_is_not_loaded_again(
    tmp_path: Path, journal: Journal
) -> None:
    inbox = FakeFolder(folder("INBOX"))
    for i in range(2):
        inbox.add(mail(i))
    server = FakeServer([inbox])
    cfg = make_cfg(tmp_path)
    run(cfg, journal, server)
    ids = [e.id for e in journal.entries("acme", USER.key) if e.id is not None]
    journal.set_load_state(ids, LoadState.loaded, dest_folder="INBOX", dest_uid="7")

    rebuilt = FakeFolder(folder("INBOX"), uidvalidity=99)
    for i in range(2):
        rebuilt.add(mail(i))
    rebuilt.unreadable.add(2)  # the re-plan cannot read one of them at first
    server.folders = [rebuilt]
    replan = run(cfg, journal, server)
    assert (replan.failed, replan.retried) == (1, 0)  # the old UIDVALIDITY is not retried

    rebuilt.unreadable.clear()
    result = run(cfg, journal, server, phase="delta")
    assert result.recovered == 1
    current = {e.uid: e for e in journal.entries("acme", USER.key) if e.uidvalidity == 99}
    assert [current[u].load_state for u in (1, 2)] == [LoadState.loaded, LoadState.loaded]
    assert current[2].dest_uid == "7"
    assert journal.counts_by_state("acme", USER.key) == {"superseded": 2, "loaded": 2}


# --- per-batch durability of the staging store -----------------------------------------------


def test_each_batch_pack_is_synced_renamed_and_its_directory_synced_before_the_journal_commit(
    tmp_path: Path, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, Any]] = []
    real_fsync, real_replace = staging._fsync, os.replace

    def spy_fsync(path: str) -> None:
        events.append(("fsync", path))
        real_fsync(path)

    def spy_replace(src: Any, dst: Any) -> None:
        events.append(("rename", (str(src), str(dst))))
        real_replace(src, dst)

    monkeypatch.setattr(staging, "_fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    original = journal.record_batch

    def spy_record(*a: Any, **kw: Any) -> Any:
        events.append(("record", [e.sha256 for e in a[3]]))
        return original(*a, **kw)

    journal.record_batch = spy_record  # type: ignore[method-assign]
    inbox = FakeFolder(folder("INBOX"))
    for i in range(5):
        inbox.add(mail(i))
    cfg = make_cfg(tmp_path, imap={"fetch_batch_messages": 2})
    run(cfg, journal, FakeServer([inbox]))

    store = StagingStore(cfg.options.staging_dir, "acme", USER.key)
    records = [i for i, (kind, _) in enumerate(events) if kind == "record"]
    assert len(records) == 3
    for at in records:
        # Batches waiting together are synced in one round, then recorded one by one: each
        # row's pack synced under its temp name, renamed, and the rename synced, before the
        # row is recorded.
        before = events[:at]
        for digest in events[at][1]:
            where = store._index.find(digest, rescan=True)
            assert where is not None
            final = f"{store.packs_dir}/{where.pack}"
            renames = [i for i, (k, v) in enumerate(before) if k == "rename" and v[1] == final]
            assert renames, "journal row recorded before its pack had its name"
            tmp = before[renames[0]][1][0]
            assert ("fsync", tmp) in before[: renames[0]], "renamed before its bytes were synced"
            assert ("fsync", store.packs_dir) in before[renames[0] :], "rename not made durable"
        synced = {Path(p) for kind, p in before if kind == "fsync"}
        assert {store.root, store.root.parent, store.base} <= synced
    assert len(os.listdir(store.packs_dir)) == 3  # a pack per batch, no temp pack left
    assert [store.get(mail_hash) for mail_hash in events[records[0]][1]] == [mail(0), mail(1)]


def test_a_failed_batch_leaves_nothing_and_a_retry_relies_on_no_unsynced_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = staging._fsync
    monkeypatch.setattr(staging, "_fsync", lambda p: (synced.append(p), real_fsync(p)))
    store = StagingStore(tmp_path / "staging", "acme", "kim")
    digest = ""

    def crashed_batch() -> None:
        nonlocal digest
        with store.batch() as batch:
            digest = batch.put(b"crashed batch")
            raise RuntimeError("connection dropped before the journal commit")

    with pytest.raises(RuntimeError):
        crashed_batch()
    assert synced == []
    assert os.listdir(store.packs_dir) == []  # the temp pack is gone: nothing refers to it
    assert not store.has(digest)

    with store.batch() as batch:
        assert batch.put(b"crashed batch") == digest
    assert store.get(digest) == b"crashed batch"
    (pack,) = os.listdir(store.packs_dir)

    # A later batch that finds the message already staged syncs that pack (and its
    # directory) again: its writer may have died between its rename and its directory sync.
    synced.clear()
    with store.batch() as batch:
        assert batch.put(b"crashed batch") == digest
    assert f"{store.packs_dir}/{pack}" in synced
    assert store.packs_dir in synced
    assert len(os.listdir(store.packs_dir)) == 1  # stored once

    synced.clear()
    single = store.put(b"one message")
    assert store.packs_dir in synced
    assert store.get(single) == b"one message"


class FakeCondstoreMailbox(FakeMailbox):
    """A source with CONDSTORE: EXAMINE reports a HIGHESTMODSEQ (here: 100 + messages)."""

    modseq: int | None = None

    def examine(self, f: SourceFolder) -> tuple[int, int]:
        uidvalidity, exists = super().examine(f)
        self.modseq = 100 + exists
        return uidvalidity, exists


def test_a_folder_is_marked_read_through_only_after_its_batches_are_recorded(
    tmp_path: Path, journal: Journal
) -> None:
    events: list[tuple[str, str]] = []
    record, set_modseq = journal.record_batch, journal.set_folder_modseq

    def spy_record(*a: Any, **kw: Any) -> Any:
        events.append(("record", a[2].folder))
        return record(*a, **kw)

    def spy_modseq(*a: Any, **kw: Any) -> Any:
        events.append(("read through", a[2]))
        return set_modseq(*a, **kw)

    journal.record_batch = spy_record  # type: ignore[method-assign]
    journal.set_folder_modseq = spy_modseq  # type: ignore[method-assign]
    boxes = [FakeFolder(folder(name)) for name in ("INBOX", "Archiv", "Sent")]
    for n, box in enumerate(boxes):
        for i in range(2 + n):
            box.add(mail(10 * n + i))
    cfg = make_cfg(tmp_path, imap={"fetch_batch_messages": 1})
    server = FakeServer(boxes)
    result = extract_user(cfg, journal, USER, mailbox=lambda c, u: FakeCondstoreMailbox(server))

    assert result.staged == 2 + 3 + 4
    for name, count in (("INBOX", 2), ("Archiv", 3), ("Sent", 4)):
        marked = events.index(("read through", name))
        recorded = [i for i, e in enumerate(events) if e == ("record", name)]
        assert len(recorded) == count
        assert max(recorded) < marked
    rows = {r.folder: r for r in journal.folder_rows("acme", USER.key)}
    assert {n: int(r.modseq or 0) for n, r in rows.items()} == {
        "INBOX": 102,
        "Archiv": 103,
        "Sent": 104,
    }


def test_a_failed_commit_stops_the_extract_and_marks_no_later_folder_read_through(
    tmp_path: Path, journal: Journal
) -> None:
    record = journal.record_batch

    def failing_record(*a: Any, **kw: Any) -> Any:
        if a[2].folder == "Archiv":
            raise OSError("disk full")
        return record(*a, **kw)

    journal.record_batch = failing_record  # type: ignore[method-assign]
    boxes = [FakeFolder(folder(name)) for name in ("INBOX", "Archiv", "Sent")]
    for n, box in enumerate(boxes):
        box.add(mail(n))
    cfg = make_cfg(tmp_path)
    server = FakeServer(boxes)
    with pytest.raises(OSError, match="disk full"):
        extract_user(cfg, journal, USER, mailbox=lambda c, u: FakeCondstoreMailbox(server))

    rows = {r.folder: r for r in journal.folder_rows("acme", USER.key)}
    assert int(rows["INBOX"].modseq or 0) == 101
    assert not rows["Archiv"].modseq
    assert rows["Archiv"].highest_uid == 0
    assert "Sent" not in rows or not rows["Sent"].modseq
    assert [e.folder for e in journal.entries("acme", USER.key)] == ["INBOX"]
    # The rerun takes up where the journal stands: nothing lost, nothing doubled.
    journal.record_batch = record  # type: ignore[method-assign]
    again = extract_user(cfg, journal, USER, mailbox=lambda c, u: FakeCondstoreMailbox(server))
    assert again.staged == 2
    assert sorted(e.folder for e in journal.entries("acme", USER.key)) == [
        "Archiv",
        "INBOX",
        "Sent",
    ]


def test_a_folder_name_with_the_separator_refuses_the_user_before_anything_is_read(
    tmp_path: Path, journal: Journal
) -> None:
    """Preflight leaves finished users' folder names to their transfer: a folder created
    since with ``\\`` (or a ``/`` that splits it into levels) must not arrive as nested
    folders."""
    inbox = FakeFolder(folder("INBOX"))
    inbox.add(mail(1))
    bad = FakeFolder(folder("Q1\\Q2"))
    bad.add(mail(2))
    cfg = make_cfg(tmp_path)
    with pytest.raises(UserError) as raised:
        run(cfg, journal, FakeServer([inbox, bad]), check_folder_names=True)
    assert raised.value.code == "SXM-USR-004"
    assert "'Q1\\\\Q2' contains" in raised.value.message
    assert list(journal.entries("acme", USER.key)) == []

    accept = cfg.preflight.model_copy(update={"accept": [f"PF-USR-005:{USER.key}"]})
    accepting = cfg.model_copy(update={"preflight": accept})
    assert run(accepting, journal, FakeServer([inbox, bad]), check_folder_names=True).staged == 2


def test_folder_names_preflight_listed_are_not_checked_again(
    tmp_path: Path, journal: Journal
) -> None:
    """Only a user preflight left to its transfer is checked there: preflight's own check
    (and its exclusion, or the operator's acceptance) stands for the others."""
    inbox, bad = FakeFolder(folder("INBOX")), FakeFolder(folder("Q1\\Q2"))
    bad.add(mail(2))
    assert run(make_cfg(tmp_path), journal, FakeServer([inbox, bad])).staged == 1
