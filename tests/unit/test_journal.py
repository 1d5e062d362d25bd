"""The journal's contract on both backends: SQLite (one machine) and PostgreSQL (many workers).

Every test runs twice, against a fresh SQLite file and against a fresh database on the
session's private PostgreSQL server (:mod:`tests.support.postgres`).
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scalix_migrate.records import (
    FolderCursor,
    LedgerEntry,
    LoadState,
    ScalixUser,
    SourceFolder,
)
from scalix_migrate.state import Journal, UserStatus, this_worker, users
from tests.support.postgres import PostgresServer, session_postgres

TENANT = "acme"
USER = ScalixUser("Kim Lee", "acme", addresses=("kim.lee@acme.test",))
INBOX = SourceFolder("INBOX", "INBOX", "/", frozenset())
WHEN = datetime(2024, 3, 1, 12, 30, 5, tzinfo=UTC)


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> PostgresServer:
    return session_postgres(request)


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty journal database on the parametrised backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"j_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def journal(journal_url: str) -> Iterator[Journal]:
    with Journal.open(url=journal_url) as j:
        j.upsert_users(TENANT, [USER])
        yield j


def entry(
    uid: int, body: str, uidvalidity: int = 7, flags: frozenset[str] = frozenset()
) -> LedgerEntry:
    return LedgerEntry(
        folder="INBOX",
        uidvalidity=uidvalidity,
        uid=uid,
        sha256=f"{body:0>64}"[:64],
        size=100 + uid,
        internaldate=WHEN,
        flags=flags,
        message_id=f"<{body}@acme.test>",
    )


def by_uid(journal: Journal) -> dict[tuple[int, int], LedgerEntry]:
    return {(e.uidvalidity, e.uid): e for e in journal.entries(TENANT, USER.key)}


def test_record_batch_stores_rows_and_advances_the_cursor_once(journal: Journal) -> None:
    cursor = journal.open_folder(TENANT, USER.key, INBOX, 7, source_count=2)
    assert cursor == FolderCursor("INBOX", 7, 0)

    cursor = journal.record_batch(TENANT, USER.key, cursor, [entry(1, "a"), entry(2, "b")], 2)
    # The same UID again (a retried batch) refreshes flags and adds no row.
    cursor = journal.record_batch(
        TENANT, USER.key, cursor, [entry(2, "b", flags=frozenset({"\\Seen"}))], 2
    )

    assert cursor.highest_uid == 2
    assert journal.open_folder(TENANT, USER.key, INBOX, 7).highest_uid == 2
    rows = by_uid(journal)
    assert sorted(rows) == [(7, 1), (7, 2)]
    assert rows[(7, 2)].flags == frozenset({"\\Seen"})
    assert rows[(7, 1)].internaldate == WHEN  # an aware datetime back, on both backends
    assert rows[(7, 1)].load_state is LoadState.staged


def test_uidvalidity_change_replans_and_twins_keep_their_load_state(journal: Journal) -> None:
    cursor = journal.open_folder(TENANT, USER.key, INBOX, 7)
    journal.record_batch(TENANT, USER.key, cursor, [entry(1, "a"), entry(2, "b")], 2)
    loaded = by_uid(journal)[(7, 1)]
    assert loaded.id is not None
    journal.set_load_state([loaded.id], LoadState.loaded, dest_folder="INBOX", dest_uid="41")

    # The server renumbered the folder: same bytes "a" under UID 10, a new message "c".
    cursor = journal.open_folder(TENANT, USER.key, INBOX, 8)
    assert cursor == FolderCursor("INBOX", 8, 0)
    journal.record_batch(TENANT, USER.key, cursor, [entry(10, "a", 8), entry(11, "c", 8)], 11)

    rows = by_uid(journal)
    assert rows[(7, 1)].load_state is LoadState.superseded
    assert (rows[(8, 10)].load_state, rows[(8, 10)].dest_uid) == (LoadState.loaded, "41")
    assert rows[(8, 11)].load_state is LoadState.staged
    assert rows[(7, 2)].load_state is LoadState.staged  # "b" is gone from the source
    assert journal.folder_rows(TENANT, USER.key)[0].replans == 1


def test_set_load_state_and_counts(journal: Journal) -> None:
    cursor = journal.open_folder(TENANT, USER.key, INBOX, 7)
    journal.record_batch(TENANT, USER.key, cursor, [entry(u, f"m{u}") for u in range(1, 6)], 5)
    ids = {e.uid: e.id or 0 for e in journal.entries(TENANT, USER.key)}

    journal.set_load_state([ids[1], ids[2], ids[3]], LoadState.loaded, dest_folder="INBOX")
    journal.set_load_state(
        [ids[4]], LoadState.failed, error_code="SXM-DST-004", error_detail="too big"
    )
    journal.set_load_state([], LoadState.failed)  # nothing to do, no error

    assert journal.counts_by_state(TENANT) == {"loaded": 3, "failed": 1, "staged": 1}
    assert journal.counts_by_state(TENANT, "nobody@acme.test") == {}
    errors = journal.item_errors(TENANT)
    assert [(e.uid, e.error_code) for e in errors] == [(4, "SXM-DST-004")]
    assert [e.uid for e in journal.entries(TENANT, USER.key, states=[LoadState.staged])] == [5]


def test_user_status_survives_rediscovery(journal: Journal) -> None:
    journal.set_user_status(
        TENANT,
        USER.key,
        UserStatus.failed,
        error_code="SXM-USR-003",
        error_message="taken",
        load_started=WHEN,
    )
    journal.upsert_users(TENANT, [USER, ScalixUser("Ann Bo", "acme", addresses=("ann@acme.test",))])

    rows = {r.user_key: r for r in journal.user_rows(TENANT)}
    assert rows[USER.key].status == "failed"
    assert rows[USER.key].load_started == WHEN
    assert rows["ann@acme.test"].status == "pending"
    assert journal.users_with_status(TENANT, UserStatus.failed) == [USER.key]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=10)
    return proc.pid


def _holder(journal: Journal) -> str | None:
    with journal.engine.connect() as conn:
        value = conn.scalar(
            users.select().with_only_columns(users.c.claimed_by).where(users.c.user_key == USER.key)
        )
    return None if value is None else str(value)


def test_claims_refuse_a_live_other_worker_and_take_over_a_dead_one(journal: Journal) -> None:
    me = this_worker()
    host = me.rpartition(":")[0]
    other = "other-host.example:4242"  # another machine: its liveness is unknown, so it holds

    assert journal.claim_user(TENANT, USER.key, worker=other) is None
    assert journal.claim_user(TENANT, USER.key) == other
    assert _holder(journal) == other

    journal.release_user(TENANT, USER.key)
    dead = f"{host}:{_dead_pid()}"
    assert journal.claim_user(TENANT, USER.key, worker=dead) is None
    assert journal.claim_user(TENANT, USER.key) is None  # a crashed local run: taken over
    assert _holder(journal) == me
    assert journal.claim_user(TENANT, USER.key) is None  # renewing one's own claim
    assert journal.claim_user(TENANT, USER.key, worker=other) == me


def test_an_expired_lease_is_taken_over(journal: Journal) -> None:
    assert journal.claim_user(TENANT, USER.key, worker="other-host.example:1") is None
    with journal.engine.begin() as conn:
        conn.execute(users.update().values(claimed_at=datetime.now(UTC) - timedelta(hours=7)))

    assert journal.claim_user(TENANT, USER.key) is None
    assert journal.claim_user(TENANT, "nobody@acme.test") is None  # unknown user: nothing held


def _race(n: int, fn: Callable[[int], object]) -> list[object]:
    """Run ``fn(0..n-1)`` in threads released at once; results in index order."""
    barrier = threading.Barrier(n, timeout=30)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # collected and asserted on below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    return results


def test_racing_workers_exactly_one_wins_the_claim(journal_url: str) -> None:
    # Each worker has its own connection pool, as separate processes would.
    n = 6
    journals = [Journal.open(url=journal_url) for _ in range(n)]
    journals[0].upsert_users(TENANT, [USER])
    try:
        results = _race(
            n,
            lambda i: journals[i].claim_user(
                TENANT, USER.key, worker=f"other-host.example:{100 + i}"
            ),
        )
    finally:
        for j in journals:
            j.close()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert results.count(None) == 1, results


def test_workers_opening_a_fresh_journal_at_once_all_succeed(journal_url: str) -> None:
    # Two workers' first flow runs on an empty database both create the tables and both
    # record the discovered users.
    n = 4

    def open_and_discover(i: int) -> int:
        with Journal.open(url=journal_url) as j:
            j.upsert_users(TENANT, [USER])
            return len(j.user_rows(TENANT))

    results = _race(n, open_and_discover)
    assert results == [1] * n, results


def test_user_whose_primary_address_moved_keeps_one_row(journal: Journal) -> None:
    """Preflight's export-name remedy reorders the addresses: the same Scalix user returns
    under a new key; its row (nothing migrated yet) follows instead of leaving a stale one."""
    priya = ScalixUser("Priya Shah", "acme", addresses=("priya@acme.test", "pshah@acme.test"))
    journal.upsert_users(TENANT, [priya])
    journal.set_user_status(TENANT, priya.key, UserStatus.excluded, error_message="export name")
    fixed = ScalixUser("Priya Shah", "acme", addresses=("pshah@acme.test", "priya@acme.test"))

    journal.upsert_users(TENANT, [fixed])

    rows = {r.user_key: r for r in journal.user_rows(TENANT)}
    assert "priya@acme.test" not in rows
    assert rows["pshah@acme.test"].status == "pending"
    assert rows["pshah@acme.test"].error_message is None


def test_user_with_a_ledger_is_not_rekeyed(journal: Journal) -> None:
    cursor = journal.open_folder(TENANT, USER.key, INBOX, 7)
    journal.record_batch(TENANT, USER.key, cursor, [entry(1, "a")], 1)
    moved = ScalixUser("Kim Lee", "acme", addresses=("kim@acme.test", "kim.lee@acme.test"))

    journal.upsert_users(TENANT, [moved])

    keys = {r.user_key for r in journal.user_rows(TENANT)}
    assert {"kim.lee@acme.test", "kim@acme.test"} <= keys
    assert len(list(journal.entries(TENANT, USER.key))) == 1
