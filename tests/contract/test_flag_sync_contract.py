"""Flag sync (the delta phase): source flags that change after a load reach the destination.

Runs over IMAP/Dovecot, Maildir and mbox. The source's flag changes are recorded the way
extraction records them (``Journal.update_flags``); the next ``load_user`` applies them.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from scalix_migrate.load import load_user
from scalix_migrate.state import messages
from scalix_migrate.verify import verify_user
from tests.contract.conftest import Sink
from tests.contract.test_sink_contract import corpus, expected_flags

# uid -> the flags the source shows after the users kept working (corpus(): uids 1-4)
CHANGED = {
    1: frozenset({"\\Flagged"}),  # read -> unread, and flagged
    2: frozenset({"\\Answered", "\\X-Forwarded", "\\Seen"}),  # unflagged, now read
    3: frozenset({"\\Seen", "\\Answered", "Project_Y"}),  # a keyword replaced by another
}


def _held_flags(sink: Sink) -> dict[str, frozenset[str]]:
    with sink.open(sink.config()) as dest:
        return {m.sha256 or m.id: m.flags - {"\\Recent"} for m in dest.messages("INBOX")}


def _sha(uid: int) -> str:
    return hashlib.sha256(corpus()[uid - 1].body).hexdigest()


def test_flags_changed_at_the_source_are_applied_by_the_next_load(sink: Sink) -> None:
    cfg = sink.config()
    cursor = sink.stage(cfg, "INBOX", corpus())
    first = load_user(cfg, sink.journal, sink.user)
    assert (first.appended, first.flags_updated) == (4, 0)

    changed = sink.journal.update_flags(
        cfg.tenant, sink.user.key, "INBOX", cursor.uidvalidity, dict(CHANGED)
    )
    assert changed == 3
    # Before the sync the destination still shows the old flags, and verify says so.
    stale = verify_user(cfg, sink.journal, sink.user)
    assert sorted((d.kind, d.uid) for d in stale.differences) == [
        ("flags", 1),
        ("flags", 2),
        ("flags", 3),
    ]

    second = load_user(cfg, sink.journal, sink.user)

    assert (second.appended, second.flags_updated, second.item_errors) == (0, 3, ())
    held = _held_flags(sink)
    for uid, flags in CHANGED.items():
        assert held[_sha(uid)] == expected_flags(flags), uid
    assert held[_sha(4)] == expected_flags(corpus()[3].flags)  # untouched
    assert verify_user(cfg, sink.journal, sink.user).ok
    # Nothing changed since: the next load stores no flags.
    assert load_user(cfg, sink.journal, sink.user).flags_updated == 0


def test_rows_without_known_destination_flags_or_id_are_synced(sink: Sink) -> None:
    """Rows loaded by an older version (no ``dest_flags``) or by a server without UIDPLUS (no
    destination id): the message is found by its identity, and given the source's flags."""
    cfg = sink.config()
    cursor = sink.stage(cfg, "INBOX", corpus())
    load_user(cfg, sink.journal, sink.user)
    with sink.journal.engine.begin() as conn:
        conn.execute(
            messages.update()
            .where(messages.c.user_key == sink.user.key)
            .values(dest_flags=None, dest_uid=None)
        )
    sink.journal.update_flags(
        cfg.tenant, sink.user.key, "INBOX", cursor.uidvalidity, {1: frozenset({"\\Flagged"})}
    )

    result = load_user(cfg, sink.journal, sink.user)

    # Every row's destination flags were unknown, so every row was (re)set.
    assert (result.appended, result.flags_updated, result.item_errors) == (0, 4, ())
    assert _held_flags(sink)[_sha(1)] == frozenset({"\\Flagged"})
    with sink.journal.engine.connect() as conn:
        rows = conn.execute(
            sa.select(messages.c.uid, messages.c.dest_uid, messages.c.dest_flags).where(
                messages.c.user_key == sink.user.key
            )
        ).all()
    assert all(r.dest_uid is not None and r.dest_flags is not None for r in rows)
    assert len({r.dest_uid for r in rows}) == 4  # each row found its own message
    assert verify_user(cfg, sink.journal, sink.user).ok
    assert load_user(cfg, sink.journal, sink.user).flags_updated == 0


def test_a_message_gone_from_the_destination_is_an_item_error(sink: Sink) -> None:
    cfg = sink.config()
    cursor = sink.stage(cfg, "INBOX", corpus()[:2])
    load_user(cfg, sink.journal, sink.user)
    row = next(e for e in sink.journal.entries(cfg.tenant, sink.user.key) if e.uid == 1)
    assert row.dest_uid is not None
    with sink.journal.engine.begin() as conn:
        # The recorded destination id now names nothing (e.g. the user deleted the message).
        conn.execute(messages.update().where(messages.c.id == row.id).values(dest_uid="999999"))
    sink.journal.update_flags(
        cfg.tenant,
        sink.user.key,
        "INBOX",
        cursor.uidvalidity,
        {1: frozenset(), 2: frozenset({"\\Seen"})},
    )

    result = load_user(cfg, sink.journal, sink.user)

    assert result.flags_updated == 1
    assert [(f.uid, f.code) for f in result.item_errors] == [(1, "SXM-DST-008")]
    assert _held_flags(sink)[_sha(2)] == frozenset({"\\Seen"})
