"""Load over several destination connections per user, against the test bed's Dovecot.

* Several folders (one of them sliced over the connections) with ``connections_per_user: 3``:
  every message exactly once, byte-identical with its flags and INTERNALDATE, verify clean,
  a rerun appends nothing, and the ``LoadResult`` equals that of a one-connection load.
* The daily byte budget is shared: the same messages (a ledger-order prefix) as serially.
* A connection the destination refuses is done without.
* A connection that breaks mid-APPEND (after the server stored the batch) hands its batch
  back: reconciled, never stored twice, even with duplicate Message-IDs in flight elsewhere.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.destinations.base import (
    AppendItem,
    AppendResult,
    Destination,
)
from scalix_migrate.errors import TransientError
from scalix_migrate.load import LoadResult, load_user
from scalix_migrate.message_identity import message_id_of
from scalix_migrate.records import LedgerEntry, LoadState, ScalixUser, SourceFolder
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import Journal
from scalix_migrate.user_context import open_destination
from scalix_migrate.verify import verify_user
from tests.integration.test_load import _client, _config, _user

pytestmark = pytest.mark.testbed

#: folder -> message count: INBOX spans several batches (sliced over the connections).
FOLDERS = {"INBOX": 260, "Archiv/2019": 90, "Sent": 40, "Leer": 0}


def _stage(
    cfg: TenantConfig,
    journal: Journal,
    user: ScalixUser,
    folders: dict[str, int],
    *,
    refused: bool = True,
) -> dict[str, list[tuple[str, frozenset[str], float]]]:
    """Stage messages (duplicate Message-IDs, some without one, and when ``refused`` a
    zero-byte one the server refuses as INBOX uid 101); return folder -> sorted (sha256, flags,
    internaldate) expected there."""
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
    expected: dict[str, list[tuple[str, frozenset[str], float]]] = {}
    for f_no, (folder, n) in enumerate(folders.items()):
        cursor = journal.open_folder(
            cfg.tenant, user.key, SourceFolder(folder, folder, "/", frozenset()), 7
        )
        entries, want = [], []
        for i in range(n):
            if refused and folder == "INBOX" and i == 100:
                body = b""  # Dovecot refuses a zero-byte message: an item error
            else:
                mid = b"" if i % 9 == 0 else f"Message-ID: <p{i % 30}@example.com>\r\n".encode()
                body = (
                    mid
                    + f"Subject: {folder} {i}\r\n\r\n".encode()
                    + b"x" * (500 + (i * 53) % 4000)
                    + b"\r\n"
                )
            flags = frozenset({"\\Seen"} if i % 3 else {"\\Flagged", "$Label1"})
            when = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(hours=i, minutes=f_no)
            sha = store.put(body)
            entries.append(
                LedgerEntry(folder, 7, i + 1, sha, len(body), when, flags, message_id_of(body))
            )
            if body:
                want.append((sha, flags, when.timestamp()))
        journal.record_batch(cfg.tenant, user.key, cursor, entries, n)
        expected[folder] = sorted(want)
    return expected


def _dest_snapshot(testbed: Any, login: str, folders: Sequence[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    with _client(testbed, login) as dst:
        for folder in folders:
            dst.select_folder(folder, readonly=True)
            got = dst.fetch(dst.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
            out[folder] = sorted(
                (
                    hashlib.sha256(d[b"BODY[]"]).hexdigest(),
                    frozenset(f.decode() for f in d[b"FLAGS"]) - {"\\Recent"},
                    d[b"INTERNALDATE"].timestamp(),
                )
                for d in got.values()
            )
    return out


def _load(
    tmp_path: Path, testbed: Any, connections: int, **dest: Any
) -> tuple[TenantConfig, Journal, ScalixUser, str]:
    tmp_path.mkdir(exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    extra = f"  connections_per_user: {connections}\n" + "".join(
        f"  {k}: {v}\n" for k, v in dest.items()
    )
    _, cfg = _config(tmp_path, testbed, tag, dest_extra=extra)
    return cfg, Journal.open(directory=tmp_path / "state"), _user("pat"), f"pat-{tag}@dest.test"


def _comparable(r: LoadResult) -> LoadResult:
    """The result without what may differ between two runs: connections, server timings."""
    return replace(
        r,
        connections=0,
        item_errors=tuple(replace(f, detail=f.detail.split(" (")[0]) for f in r.item_errors),
    )


def test_several_folders_over_three_connections(testbed: Any, tmp_path: Path) -> None:
    results: dict[int, LoadResult] = {}
    for connections in (3, 1):
        cfg, journal, user, login = _load(tmp_path / str(connections), testbed, connections)
        with journal:
            expected = _stage(cfg, journal, user, FOLDERS)
            result = load_user(cfg, journal, user)
            results[connections] = result
            assert (result.appended, result.failed) == (sum(FOLDERS.values()) - 1, 1)
            assert [(f.folder, f.uid, f.code) for f in result.item_errors] == [
                ("INBOX", 101, "SXM-DST-004")
            ]
            assert result.connections == connections
            again = load_user(cfg, journal, user)
            assert (again.appended, again.already_present, again.failed) == (0, 0, 0)
            check = verify_user(cfg, journal, user)
            assert check.ok, check.differences
            assert journal.counts_by_state(cfg.tenant, user.key) == {
                "loaded": sum(FOLDERS.values()) - 1,
                "failed": 1,
            }
        assert _dest_snapshot(testbed, login, list(FOLDERS)) == expected
    # Deterministic: the parallel load's totals and item errors are the serial load's.
    assert _comparable(results[3]) == _comparable(results[1])


def test_daily_byte_budget_is_shared_by_the_connections(testbed: Any, tmp_path: Path) -> None:
    cfg, journal, user, _ = _load(tmp_path, testbed, 3, daily_byte_budget=300_000)
    with journal:
        _stage(cfg, journal, user, {"INBOX": 260}, refused=False)
        pending = list(journal.entries(cfg.tenant, user.key))
        result = load_user(cfg, journal, user)
        assert result.stopped_code == "SXM-DST-006"
        # Exactly the ledger-order prefix that fits (more than two batches of 50).
        used, prefix = 0, []
        for e in pending:
            if used + e.size > 300_000:
                break
            used += e.size
            prefix.append(e.uid)
        assert len(prefix) > 100
        assert result.appended == len(prefix)
        assert result.bytes == used
        loaded = [e.uid for e in journal.entries(cfg.tenant, user.key, states=[LoadState.loaded])]
        assert loaded == prefix
        assert journal.counts_by_state(cfg.tenant, user.key) == {
            "loaded": len(prefix),
            "staged": 260 - len(prefix),
        }


def test_a_refused_extra_connection_is_done_without(testbed: Any, tmp_path: Path) -> None:
    cfg, journal, user, login = _load(tmp_path, testbed, 3)
    opened = 0
    lock = threading.Lock()

    def only_two(c: TenantConfig, u: ScalixUser) -> Destination:
        nonlocal opened
        with lock:
            opened += 1
            if opened == 3:
                raise TransientError("too many connections", code="SXM-DST-001", user=u.key)
        return open_destination(c, u)

    with journal:
        expected = _stage(cfg, journal, user, {"INBOX": 200})
        result = load_user(cfg, journal, user, destination=only_two)
        assert (result.appended, result.failed, result.connections) == (199, 1, 2)
    assert _dest_snapshot(testbed, login, ["INBOX"]) == expected


class _BreaksOnce:
    """A real destination whose first MULTIAPPEND stores the batch, then reports a broken
    connection (as a drop after the server committed, before the tagged OK arrived)."""

    broken = threading.Event()

    def __init__(self, inner: Destination) -> None:
        self.inner = inner
        self.layout = inner.layout

    def __enter__(self) -> _BreaksOnce:
        self.inner.__enter__()
        self.layout = self.inner.layout
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.inner.__exit__(exc_type, exc, tb)

    def append_many(self, folder: str, items: Sequence[AppendItem]) -> list[AppendResult]:
        results = self.inner.append_many(folder, items)
        if len(items) > 1 and not self.broken.is_set():
            self.broken.set()
            raise TransientError("connection lost during MULTIAPPEND", code="SXM-DST-005")
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_connection_broken_mid_append_hands_its_batch_back(testbed: Any, tmp_path: Path) -> None:
    cfg, journal, user, login = _load(tmp_path, testbed, 3)
    _BreaksOnce.broken.clear()
    calls = 0
    lock = threading.Lock()

    def factory(c: TenantConfig, u: ScalixUser) -> Destination:
        nonlocal calls
        with lock:
            calls += 1
            n = calls
        inner = open_destination(c, u)
        # The second connection (a worker thread's) is the one that breaks.
        return _BreaksOnce(inner) if n == 2 else inner  # type: ignore[return-value]

    with journal:
        expected = _stage(cfg, journal, user, {"INBOX": 260})
        result = load_user(cfg, journal, user, destination=factory)
        assert _BreaksOnce.broken.is_set()
        # The broken batch was stored by the server: found again, not appended twice.
        assert result.already_present > 0
        assert result.appended + result.already_present == 259
        assert result.failed == 1
        assert journal.counts_by_state(cfg.tenant, user.key) == {"loaded": 259, "failed": 1}
        assert verify_user(cfg, journal, user).ok
    snapshot = _dest_snapshot(testbed, login, ["INBOX"])
    assert Counter(s for s, _, _ in snapshot["INBOX"]) == Counter(
        s for s, _, _ in expected["INBOX"]
    )
    assert snapshot == expected
