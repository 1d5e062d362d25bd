"""Verify reads a message's bytes back once: later verifies list proven messages by metadata.

Run over every sink (IMAP/Dovecot, Maildir, mbox). mbox has no folder generation (the file
can be rewritten in place), so it reads every message again each time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from imapclient import IMAPClient

from scalix_migrate.config import TenantConfig
from scalix_migrate.destinations.base import (
    Destination,
    DestinationMessage,
    Proven,
)
from scalix_migrate.load import load_user
from scalix_migrate.records import ScalixUser
from scalix_migrate.user_context import open_destination
from scalix_migrate.verify import verify_user
from tests.contract.conftest import Msg, Sink
from tests.contract.test_sink_contract import corpus, mail


class _Spy:
    """Wraps a destination and keeps every message its ``messages()`` listed."""

    def __init__(self, inner: Destination, seen: list[DestinationMessage]) -> None:
        self.inner, self.seen, self.layout = inner, seen, inner.layout

    def __enter__(self) -> _Spy:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(None, None, None)

    def list_folders(self) -> list[str]:
        return self.inner.list_folders()

    def messages(
        self, folder: str, *, proven: Proven | None = None
    ) -> Iterator[DestinationMessage]:
        for m in self.inner.messages(folder, proven=proven):
            self.seen.append(m)
            yield m


def _verify_seen(cfg: TenantConfig, sink: Sink) -> tuple[list[DestinationMessage], list[str]]:
    seen: list[DestinationMessage] = []

    def spy(c: TenantConfig, u: ScalixUser) -> Destination:
        return _Spy(open_destination(c, u), seen)  # type: ignore[return-value]

    result = verify_user(cfg, sink.journal, sink.user, destination=spy)
    return seen, [d.kind for d in result.differences]


def test_a_second_verify_does_not_read_the_bytes_again(sink: Sink) -> None:
    cfg = sink.config()
    sink.stage(cfg, "INBOX", corpus())
    load_user(cfg, sink.journal, sink.user)
    first, kinds = _verify_seen(cfg, sink)
    assert kinds == []
    assert len(first) == 4
    assert all(m.sha256 is not None for m in first)

    second, kinds = _verify_seen(cfg, sink)
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
    if sink.kind != "mbox":
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
