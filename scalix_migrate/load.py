"""Load one user's staged messages into the destination, exactly once.

``load_user`` works from the journal (the truth) and the staging store (the bytes):

1. **Folders.** Every folder the journal knows (empty ones too) is mapped
   (:func:`scalix_migrate.folders.plan_folders`), created when missing, and its destination
   name recorded (``Journal.set_dest_folder``). Every rename is in ``LoadResult.folder_notes``.
2. **Reconcile.** Rows left ``appending`` by an earlier crash are looked up in the destination
   (Message-ID + size, or the header fingerprint + size without a Message-ID), excluding ids
   already claimed by other loaded rows (so duplicate Message-IDs are not folded into one).
   Found rows become ``loaded``; the others are appended again in step 3.
3. **Append** in batches per folder: the batch's rows are marked ``appending`` (committed)
   *before* the APPEND, and ``loaded`` with their destination ids after it. A crash in between
   leaves ``appending`` rows, which step 2 of the next run resolves: no message is lost or
   stored twice.

Per-message outcomes: ``\\Deleted`` messages are ``skipped`` when
``options.messages.skip_deleted``; messages of excluded folders are ``skipped``; a message over
the size limit (``options.messages.max_size_bytes`` or the destination's, e.g. APPENDLIMIT) or
rejected by the destination is ``failed`` with its code (SXM-DST-004) and the rest goes on.
Over quota or a refused login raise :class:`UserError`; throttling that outlasts the sink's
bounded retries raises :class:`TransientError` (the rows of the batch in flight stay
``appending`` and are reconciled by the rerun).

A per-user byte budget (``destination.daily_byte_budget``, IMAP only) counts the bytes loaded
in the last 24 hours; when the next message would exceed it the user stops cleanly with
``LoadResult.stopped_code == "SXM-DST-006"`` and resumes in a later run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from scalix_migrate.config import TenantConfig
from scalix_migrate.destinations.base import (
    AppendItem,
    Destination,
    fingerprint_of,
    message_id_of,
    open_destination,
)
from scalix_migrate.errors import ItemError
from scalix_migrate.flags import is_deleted, map_flags
from scalix_migrate.folders import FolderPlan, SourceFolderInfo, plan_folders
from scalix_migrate.records import LedgerEntry, LoadState, ScalixUser, SpecialFolder
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import Journal, messages

BATCH_MESSAGES = 50
BATCH_BYTES = 8 << 20
BUDGET_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class ItemFailure:
    folder: str
    uid: int
    code: str
    detail: str


@dataclass(frozen=True)
class LoadResult:
    appended: int
    already_present: int
    skipped: int
    failed: int
    bytes: int
    folders_created: int
    folder_notes: tuple[str, ...] = ()
    item_errors: tuple[ItemFailure, ...] = ()
    stopped_code: str | None = None  # "SXM-DST-006" when the daily byte budget stopped the user


@dataclass
class _Counts:
    appended: int = 0
    already_present: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0


def mark_loaded(
    journal: Journal, dest_folder: str, loaded: Sequence[tuple[int, str | None]]
) -> None:
    """Mark ledger rows ``loaded`` with their destination ids, in one transaction."""
    if not loaded:
        return
    now = datetime.now(UTC)
    with journal.engine.begin() as conn:
        for row_id, dest_uid in loaded:
            conn.execute(
                messages.update()
                .where(messages.c.id == row_id)
                .values(
                    load_state=LoadState.loaded.value,
                    dest_folder=dest_folder,
                    dest_uid=dest_uid,
                    error_code=None,
                    error_detail=None,
                    updated_at=now,
                )
            )


def loaded_bytes_since(journal: Journal, tenant: str, user_key: str, since: datetime) -> int:
    """Bytes of the user's rows that became ``loaded`` at or after ``since``."""
    q = sa.select(sa.func.coalesce(sa.func.sum(messages.c.size), 0)).where(
        messages.c.tenant == tenant,
        messages.c.user_key == user_key,
        messages.c.load_state == LoadState.loaded.value,
        messages.c.updated_at >= since,
    )
    with journal.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def source_folders(
    journal: Journal, tenant: str, user_key: str, entries: Sequence[LedgerEntry]
) -> list[SourceFolderInfo]:
    """The user's folders as the journal knows them (rows without messages included)."""
    infos = {}
    for row in journal.folder_rows(tenant, user_key):
        special = SpecialFolder(row["special"]) if row.get("special") else None
        infos[row["folder"]] = SourceFolderInfo(row["folder"], special, row.get("folder_class"))
    for e in entries:
        infos.setdefault(e.folder, SourceFolderInfo(e.folder))
    return list(infos.values())


def load_user(
    cfg: TenantConfig,
    journal: Journal,
    user: ScalixUser,
    *,
    destination: Callable[[TenantConfig, ScalixUser], Destination] = open_destination,
) -> LoadResult:
    """Load every ``staged``/``appending`` row of ``user`` (see the module docstring)."""
    tenant, key = cfg.tenant, user.key
    store = StagingStore(cfg.options.staging_dir, tenant, key)
    pending = list(journal.entries(tenant, key, states=[LoadState.staged, LoadState.appending]))
    counts = _Counts()
    failures: list[ItemFailure] = []
    with destination(cfg, user) as dest:
        plans = plan_folders(cfg, source_folders(journal, tenant, key, pending), dest.layout)
        created = _create_folders(journal, dest, tenant, key, plans)
        target = {p.source: p.destination for p in plans}
        claimed: dict[str, set[str]] = defaultdict(set)
        for e in journal.entries(tenant, key, states=[LoadState.loaded]):
            if e.dest_folder and e.dest_uid:
                claimed[e.dest_folder].add(e.dest_uid)
        to_append = _reconcile(journal, dest, store, pending, target, claimed, counts, key)
        stopped = _append_all(cfg, journal, dest, store, to_append, target, counts, failures, key)
    notes = tuple(f"{p.source}: {n}" for p in plans for n in p.notes)
    return LoadResult(
        appended=counts.appended,
        already_present=counts.already_present,
        skipped=counts.skipped,
        failed=counts.failed,
        bytes=counts.bytes,
        folders_created=created,
        folder_notes=notes,
        item_errors=tuple(failures),
        stopped_code=stopped,
    )


def _create_folders(
    journal: Journal, dest: Destination, tenant: str, key: str, plans: Sequence[FolderPlan]
) -> int:
    existing = set(dest.list_folders())
    created = 0
    for plan in plans:
        if plan.destination is None:
            continue
        if plan.destination not in existing:
            dest.ensure_folder(plan.destination)
            existing.add(plan.destination)
            created += 1
        journal.set_dest_folder(tenant, key, plan.source, plan.destination)
    return created


def _reconcile(
    journal: Journal,
    dest: Destination,
    store: StagingStore,
    pending: Sequence[LedgerEntry],
    target: dict[str, str | None],
    claimed: dict[str, set[str]],
    counts: _Counts,
    key: str,
) -> list[LedgerEntry]:
    """Resolve ``appending`` rows; return the rows still to append, in ledger order."""
    out: list[LedgerEntry] = []
    for e in pending:
        folder = target.get(e.folder)
        if e.load_state is not LoadState.appending or folder is None:
            out.append(e)
            continue
        body = store.get(e.sha256, user=key)
        found = dest.find(
            folder,
            message_id=message_id_of(body),
            size=e.size,
            fingerprint=fingerprint_of(body, e.size),
            exclude=claimed[folder],
        )
        if found is None:
            out.append(e)
            continue
        assert e.id is not None
        mark_loaded(journal, folder, [(e.id, found)])
        claimed[folder].add(found)
        counts.already_present += 1
    return out


def _batches(entries: Sequence[LedgerEntry]) -> Iterator[list[LedgerEntry]]:
    batch: list[LedgerEntry] = []
    size = 0
    for e in entries:
        if batch and (
            batch[0].folder != e.folder
            or len(batch) >= BATCH_MESSAGES
            or size + e.size > BATCH_BYTES
        ):
            yield batch
            batch, size = [], 0
        batch.append(e)
        size += e.size
    if batch:
        yield batch


def _append_all(
    cfg: TenantConfig,
    journal: Journal,
    dest: Destination,
    store: StagingStore,
    entries: Sequence[LedgerEntry],
    target: dict[str, str | None],
    counts: _Counts,
    failures: list[ItemFailure],
    key: str,
) -> str | None:
    budget = getattr(cfg.destination, "daily_byte_budget", None)
    used = 0
    if budget is not None:
        since = datetime.now(UTC) - BUDGET_WINDOW
        used = loaded_bytes_since(journal, cfg.tenant, key, since)
    limits = [
        x
        for x in (cfg.options.messages.max_size_bytes, dest.layout.max_message_size)
        if x is not None
    ]
    max_size = min(limits) if limits else None
    for batch in _batches(entries):
        folder = target.get(batch[0].folder)
        ready: list[LedgerEntry] = []
        for e in batch:
            assert e.id is not None
            if folder is None or (cfg.options.messages.skip_deleted and is_deleted(e.flags)):
                journal.set_load_state([e.id], LoadState.skipped)
                counts.skipped += 1
            elif max_size is not None and e.size > max_size:
                _fail(
                    journal,
                    e,
                    "SXM-DST-004",
                    f"message of {e.size} bytes is over the limit of {max_size}",
                    counts,
                    failures,
                )
            else:
                ready.append(e)
        if not ready or folder is None:
            continue
        if budget is not None:
            fits: list[LedgerEntry] = []
            for e in ready:
                if used + e.size > budget:
                    break
                fits.append(e)
                used += e.size
            if len(fits) < len(ready):
                _append_batch(journal, dest, store, folder, fits, counts, failures, key, cfg)
                return "SXM-DST-006"
        _append_batch(journal, dest, store, folder, ready, counts, failures, key, cfg)
    return None


def _append_batch(
    journal: Journal,
    dest: Destination,
    store: StagingStore,
    folder: str,
    batch: Sequence[LedgerEntry],
    counts: _Counts,
    failures: list[ItemFailure],
    key: str,
    cfg: TenantConfig,
) -> None:
    if not batch:
        return
    table = cfg.options.flags.map
    items = [
        AppendItem(
            body=store.get(e.sha256, user=key),
            flags=map_flags(e.flags, table, keywords_allowed=dest.layout.keywords_allowed).flags,
            internaldate=e.internaldate,
        )
        for e in batch
    ]
    ids = [e.id for e in batch if e.id is not None]
    # Committed before the APPEND: a crash from here on leaves rows to reconcile, not to redo.
    journal.set_load_state(ids, LoadState.appending, dest_folder=folder)
    results = dest.append_many(folder, items)
    loaded: list[tuple[int, str | None]] = []
    for e, item, result in zip(batch, items, results, strict=True):
        assert e.id is not None
        if isinstance(result, ItemError):
            _fail(journal, e, result.code, result.message, counts, failures)
        else:
            loaded.append((e.id, result))
            counts.appended += 1
            counts.bytes += len(item.body)
    mark_loaded(journal, folder, loaded)


def _fail(
    journal: Journal,
    e: LedgerEntry,
    code: str,
    detail: str,
    counts: _Counts,
    failures: list[ItemFailure],
) -> None:
    assert e.id is not None
    journal.set_load_state([e.id], LoadState.failed, error_code=code, error_detail=detail)
    counts.failed += 1
    failures.append(ItemFailure(e.folder, e.uid, code, detail))
