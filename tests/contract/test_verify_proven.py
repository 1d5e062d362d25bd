"""Verify reads a message's bytes back once: later verifies list proven messages by metadata.

Run over every sink (IMAP/Dovecot, Maildir, mbox). mbox has no folder generation (the file
can be rewritten in place), so it reads every message again each time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import UTC, datetime

import pytest
from imapclient import IMAPClient

from scalix_migrate.config import TenantConfig
from scalix_migrate.destinations.base import (
    Destination,
    DestinationMessage,
    FolderDelta,
    Proven,
)
from scalix_migrate.load import load_user
from scalix_migrate.records import LoadState, ScalixUser
from scalix_migrate.user_context import open_destination
from scalix_migrate.verify import verify_user
from tests.contract.conftest import Msg, Sink
from tests.contract.test_sink_contract import corpus, mail


class _Spy:
    """Wraps a destination and keeps every message its ``messages()`` listed. With
    ``sealing=False`` it gives no folder state, so verify lists every folder (the proofs'
    path, which a sealed folder skips)."""

    def __init__(
        self, inner: Destination, seen: list[DestinationMessage], *, sealing: bool
    ) -> None:
        self.inner, self.seen, self.layout, self.sealing = inner, seen, inner.layout, sealing

    def __enter__(self) -> _Spy:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(None, None, None)

    def list_folders(self) -> list[str]:
        return self.inner.list_folders()

    def folder_state(self, folder: str) -> str | None:
        return self.inner.folder_state(folder) if self.sealing else None

    def changes(self, folder: str, since: str, now: str) -> FolderDelta | None:
        return self.inner.changes(folder, since, now)

    def messages(
        self,
        folder: str,
        *,
        proven: Proven | None = None,
        ids: Collection[str] | None = None,
    ) -> Iterator[DestinationMessage]:
        for m in self.inner.messages(folder, proven=proven, ids=ids):
            self.seen.append(m)
            yield m


def _verify_seen(
    cfg: TenantConfig, sink: Sink, *, sealing: bool = True
) -> tuple[list[DestinationMessage], list[str]]:
    seen: list[DestinationMessage] = []

    def spy(c: TenantConfig, u: ScalixUser) -> Destination:
        return _Spy(open_destination(c, u), seen, sealing=sealing)  # type: ignore[return-value]

    result = verify_user(cfg, sink.journal, sink.user, destination=spy)
    return seen, [d.kind for d in result.differences]


def test_a_second_verify_does_not_read_the_bytes_again(sink: Sink) -> None:
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus())
    load_user(cfg, sink.journal, sink.user)
    first, kinds = _verify_seen(cfg, sink, sealing=False)
    assert kinds == []
    assert len(first) == 4
    assert all(m.sha256 is not None for m in first)

    second, kinds = _verify_seen(cfg, sink, sealing=False)
    assert kinds == []
    assert len(second) == 4
    if sink.kind == "mbox":
        assert all(m.sha256 is not None for m in second)  # no generation: read again
    else:
        assert all(m.sha256 is None for m in second), "proven bytes were downloaded again"
        assert {m.size for m in second} == {m.size for m in first}


def test_a_proof_does_not_hide_flag_changes_or_new_rows(sink: Sink) -> None:
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus()[:2])
    load_user(cfg, sink.journal, sink.user)
    assert _verify_seen(cfg, sink)[1] == []
    with sink.open(cfg) as dest:
        ident = next(iter(dest.messages("INBOX"))).id
        assert dest.set_flags("INBOX", {ident: frozenset({"\\Flagged"})}) == {}
    # A message loaded after the proof is read in full; the proven ones by metadata.
    uv = next(r.uidvalidity for r in sink.journal.folder_rows(cfg.tenant, sink.user.key))
    sink.stage(
        cfg, "INBOX", [Msg(mail(70), frozenset(), datetime.now(UTC))], uidvalidity=uv, first_uid=3
    )
    load_user(cfg, sink.journal, sink.user)
    seen, kinds = _verify_seen(cfg, sink)
    assert kinds == ["flags"]
    if sink.kind == "imap":  # sealed: the new message in full, the changed one by metadata
        assert sorted(m.sha256 is None for m in seen) == [False, True]
    elif sink.kind == "maildir":  # listed: the proven ones by metadata
        assert sorted(m.sha256 is None for m in seen) == [False, True, True]


def test_a_recreated_imap_folder_is_read_again_and_its_changes_found(sink: Sink) -> None:
    """Same UIDs under a new UIDVALIDITY name other messages: nothing proven may be trusted."""
    if sink.kind != "imap":
        return  # the generation here is UIDVALIDITY; the other sinks are covered above
    cfg = sink.config()
    originals = corpus()[:2]
    sink.stage(cfg, "Archive", originals)
    load_user(cfg, sink.journal, sink.user)
    assert _verify_seen(cfg, sink)[1] == []

    testbed_dest = open_destination(cfg, sink.user)
    with testbed_dest as dest:
        client = dest.client  # type: ignore[attr-defined]
        assert isinstance(client, IMAPClient)
        client.delete_folder("Archive")
        client.create_folder("Archive")
        for m in originals:  # same sizes, other bytes, the same UIDs 1 and 2
            other = m.body.replace(b"Body of", b"Fake of")
            assert len(other) == len(m.body)
            client.append("Archive", other, sorted(m.flags - {"\\X-Forwarded"}), m.internaldate)
    seen, kinds = _verify_seen(cfg, sink)
    assert all(m.sha256 is not None for m in seen)
    assert kinds.count("changed") == 2


def test_a_folder_unchanged_since_its_verify_is_not_listed_again(sink: Sink) -> None:
    """IMAP with CONDSTORE: the second verify asks STATUS, not the messages; the sinks
    without a trustworthy folder state list the folder every time."""
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus())
    load_user(cfg, sink.journal, sink.user)
    first, kinds = _verify_seen(cfg, sink)
    assert (len(first), kinds) == (4, [])

    second, kinds = _verify_seen(cfg, sink)
    assert kinds == []
    result = verify_user(cfg, sink.journal, sink.user)
    assert result.ok
    assert [(f.expected, f.found) for f in result.folders] == [(4, 4)]
    if sink.kind == "imap":
        assert second == [], "an unchanged, verified folder was listed again"
    else:
        assert len(second) == 4


def _change_at_destination(cfg: TenantConfig, sink: Sink, change: str) -> None:
    with open_destination(cfg, sink.user) as dest:
        client = dest.client  # type: ignore[attr-defined]
        assert isinstance(client, IMAPClient)
        client.select_folder("INBOX")
        uid = client.search("ALL")[0]
        if change == "flags":
            client.add_flags([uid], [b"\\Flagged"])
        elif change == "expunge":
            client.delete_messages([uid])
            client.expunge()
        else:
            client.append("INBOX", mail(99), [], datetime.now(UTC))


@pytest.mark.parametrize(
    ("change", "found"), [("flags", "flags"), ("expunge", "missing"), ("append", "extra")]
)
def test_a_change_at_the_destination_unseals_the_folder(
    sink: Sink, change: str, found: str
) -> None:
    if sink.kind != "imap":
        return  # only IMAP folders are sealed (the test above)
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus()[:3])
    load_user(cfg, sink.journal, sink.user)
    assert _verify_seen(cfg, sink)[1] == []
    assert _verify_seen(cfg, sink)[0] == []  # sealed

    _change_at_destination(cfg, sink, change)
    seen, kinds = _verify_seen(cfg, sink)
    assert kinds == [found]
    assert seen, "the changed folder was not listed"
    again, kinds = _verify_seen(cfg, sink)  # a folder with a difference is never sealed
    assert (bool(again), kinds) == (True, [found])


def test_a_new_ledger_row_is_compared_alone_and_the_folder_sealed_again(sink: Sink) -> None:
    if sink.kind != "imap":
        return
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus()[:2])
    load_user(cfg, sink.journal, sink.user)
    assert _verify_seen(cfg, sink)[1] == []
    assert _verify_seen(cfg, sink)[0] == []  # sealed
    uv = next(r.uidvalidity for r in sink.journal.folder_rows(cfg.tenant, sink.user.key))
    sink.stage(
        cfg, "INBOX", [Msg(mail(71), frozenset(), datetime.now(UTC))], uidvalidity=uv, first_uid=3
    )
    load_user(cfg, sink.journal, sink.user)
    seen, kinds = _verify_seen(cfg, sink)
    assert kinds == []
    # Only the message added since the seal is read (in full); the sealed two not at all.
    assert [m.sha256 is None for m in seen] == [False]
    assert _verify_seen(cfg, sink)[0] == []  # sealed again, with the new row


def test_another_flag_mapping_unseals_the_folder(sink: Sink) -> None:
    """The seal covers the mapped flags: a config that maps them otherwise compares again."""
    if sink.kind != "imap":
        return
    cfg = sink.config()
    sink.stage(cfg, "INBOX", [Msg(mail(72), frozenset({"\\Flagged"}), datetime.now(UTC))])
    load_user(cfg, sink.journal, sink.user)
    assert _verify_seen(cfg, sink)[1] == []
    assert _verify_seen(cfg, sink)[0] == []  # sealed
    remapped = sink.config(flags={"map": {"\\Flagged": "$Important"}})
    seen, kinds = _verify_seen(remapped, sink)
    assert (len(seen), kinds) == (1, ["flags"])


def _sealed_inbox(sink: Sink, n: int) -> TenantConfig:
    """``n`` messages loaded into INBOX and verified twice: the folder is sealed."""
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus()[:n])
    load_user(cfg, sink.journal, sink.user)
    assert _verify_seen(cfg, sink)[1] == []
    assert _verify_seen(cfg, sink)[0] == []  # sealed
    return cfg


def _add_one(cfg: TenantConfig, sink: Sink, n: int) -> None:
    """Stage and load one more message into INBOX, as a delta run does."""
    uv = next(r.uidvalidity for r in sink.journal.folder_rows(cfg.tenant, sink.user.key))
    sink.stage(
        cfg, "INBOX", [Msg(mail(80), frozenset(), datetime.now(UTC))], uidvalidity=uv, first_uid=n
    )
    load_user(cfg, sink.journal, sink.user)


def test_a_sealed_folder_stays_sealed_over_many_verifies(sink: Sink) -> None:
    if sink.kind != "imap":
        return
    cfg = _sealed_inbox(sink, 3)
    for _ in range(3):
        seen, kinds = _verify_seen(cfg, sink)
        assert (seen, kinds) == ([], [])


def test_a_ledger_flag_change_the_destination_missed_is_found(sink: Sink) -> None:
    """The row's flags changed in the ledger (a source flag change) but the destination was
    never told: the row's digest no longer holds, so it is compared though its message did
    not change."""
    if sink.kind != "imap":
        return
    cfg = _sealed_inbox(sink, 3)
    _add_one(cfg, sink, 4)  # the folder's state moves on, so the seal alone does not hold
    row = next(iter(sink.journal.entries(cfg.tenant, sink.user.key, folder="INBOX")))
    assert row.id is not None
    sink.journal.update_flags(
        cfg.tenant, sink.user.key, "INBOX", row.uidvalidity, {row.uid: row.flags | {"\\Flagged"}}
    )
    seen, kinds = _verify_seen(cfg, sink)
    assert kinds == ["flags"]
    assert len(seen) == 2  # the new message and the changed row's, not the others


def test_a_message_no_row_names_any_more_is_still_found_extra(sink: Sink) -> None:
    """A row left the loaded state after the seal while its message stays: nothing compared
    names that message, so the count does not add up and the whole folder is listed."""
    if sink.kind != "imap":
        return
    cfg = _sealed_inbox(sink, 3)
    row = next(iter(sink.journal.entries(cfg.tenant, sink.user.key, folder="INBOX")))
    assert row.id is not None
    sink.journal.set_load_state([row.id], LoadState.failed, error_code="SXM-TEST")
    _add_one(cfg, sink, 4)
    seen, kinds = _verify_seen(cfg, sink)
    assert kinds == ["extra"]
    assert len(seen) >= 3, "the folder was not listed"


@pytest.mark.parametrize(
    ("change", "found", "read"),
    # An expunge breaks the count: the whole folder (3 left) is listed. A flag change is
    # compared alone, beside the delta's new message.
    [("expunge", "missing", 3), ("flags", "flags", 2)],
)
def test_a_destination_change_beside_a_delta_is_found(
    sink: Sink, change: str, found: str, read: int
) -> None:
    if sink.kind != "imap":
        return
    cfg = _sealed_inbox(sink, 3)
    _add_one(cfg, sink, 4)
    _change_at_destination(cfg, sink, change)
    seen, kinds = _verify_seen(cfg, sink)
    assert kinds == [found]
    assert len(seen) == read
