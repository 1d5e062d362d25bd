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

4. **Flags** (:func:`sync_flags`, the delta phase's half that is not new mail): every loaded
   row whose mapped source flags differ from the flags the destination was given
   (``dest_flags``, recorded when the row became ``loaded``; unknown for rows loaded by an
   older version or reconciled after a crash) gets the new flags at the destination
   (``Destination.set_flags``; a row without a destination id is looked up first), and the
   new ``dest_flags`` are recorded. Counted in ``LoadResult.flags_updated``; a message no
   longer at the destination is an item error SXM-DST-008 (the row stays ``loaded``).

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
from dataclasses import dataclass, replace
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
from scalix_migrate.errors import ItemError, TransientError
from scalix_migrate.flags import is_deleted, map_flags
from scalix_migrate.folders import FolderPlan, SourceFolderInfo, plan_folders
from scalix_migrate.records import LedgerEntry, LoadState, ScalixUser, SpecialFolder
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import Journal, flags_to_text, messages

BATCH_MESSAGES = 50
BATCH_BYTES = 8 << 20
BUDGET_WINDOW = timedelta(hours=24)
BATCH_ATTEMPTS = 3


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
    flags_updated: int = 0  # loaded messages whose destination flags were (re)set


@dataclass
class _Counts:
    appended: int = 0
    already_present: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0


def mark_loaded(
    journal: Journal,
    dest_folder: str,
    loaded: Sequence[tuple[int, str | None, frozenset[str] | None]],
) -> None:
    """Mark ledger rows ``loaded`` with their destination ids and the flags the destination
    was given (None: not known, e.g. found by reconciliation), in one transaction."""
    if not loaded:
        return
    now = datetime.now(UTC)
    stmt = (
        messages.update()
        .where(messages.c.id == sa.bindparam("row_id"))
        .values(
            load_state=LoadState.loaded.value,
            dest_folder=dest_folder,
            dest_uid=sa.bindparam("new_dest_uid"),
            dest_flags=sa.bindparam("new_dest_flags"),
            error_code=None,
            error_detail=None,
            updated_at=now,
        )
    )
    with journal.engine.begin() as conn:
        # One compiled statement, executemany: per-row statements cost more than the APPENDs.
        conn.execute(
            stmt,
            [
                {
                    "row_id": r,
                    "new_dest_uid": u,
                    "new_dest_flags": flags_to_text(f) if f is not None else None,
                }
                for r, u, f in loaded
            ],
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
    pending = list(journal.entries(tenant, key, states=[LoadState.staged, LoadState.appending]))
    with destination(cfg, user) as dest:
        plans = plan_folders(cfg, source_folders(journal, tenant, key, pending), dest.layout)
        created = _create_folders(journal, dest, tenant, key, plans)
        run = _Run(cfg, journal, dest, key, {p.source: p.destination for p in plans})
        to_append = [e for e in pending if not run.reconciled(e)]
        stopped = run.append_all(to_append)
        synced = sync_flags(cfg, journal, dest, key)
    c = run.counts
    return LoadResult(
        appended=c.appended,
        already_present=c.already_present,
        skipped=c.skipped,
        failed=c.failed,
        bytes=c.bytes,
        folders_created=created,
        folder_notes=tuple(f"{p.source}: {n}" for p in plans for n in p.notes),
        item_errors=(*run.failures, *synced.failures),
        stopped_code=stopped,
        flags_updated=synced.updated,
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


class _Run:
    """The state of one load: counts, failures, and the destination ids already claimed."""

    def __init__(
        self,
        cfg: TenantConfig,
        journal: Journal,
        dest: Destination,
        key: str,
        target: dict[str, str | None],
    ) -> None:
        self.cfg, self.journal, self.dest, self.key, self.target = cfg, journal, dest, key, target
        self.store = StagingStore(cfg.options.staging_dir, cfg.tenant, key)
        self.counts = _Counts()
        self.failures: list[ItemFailure] = []
        self.claimed: dict[str, set[str]] = defaultdict(set)
        for e in journal.entries(cfg.tenant, key, states=[LoadState.loaded]):
            if e.dest_folder and e.dest_uid:
                self.claimed[e.dest_folder].add(e.dest_uid)

    def reconciled(self, e: LedgerEntry) -> bool:
        """For an ``appending`` row: True (and marked loaded) when the destination has it."""
        folder = self.target.get(e.folder)
        if e.load_state is not LoadState.appending or folder is None:
            return False
        body = self.store.get(e.sha256, user=self.key)
        found = self.dest.find(
            folder,
            message_id=message_id_of(body),
            size=e.size,
            fingerprint=fingerprint_of(body, e.size),
            exclude=self.claimed[folder],
        )
        if found is None:
            return False
        assert e.id is not None
        # The flags it was given then may be older than the row's: sync_flags sets them.
        mark_loaded(self.journal, folder, [(e.id, found, None)])
        self.claimed[folder].add(found)
        self.counts.already_present += 1
        return True

    def append_all(self, entries: Sequence[LedgerEntry]) -> str | None:
        """Append in batches; return SXM-DST-006 when the byte budget stopped the user."""
        cfg = self.cfg
        budget = getattr(cfg.destination, "daily_byte_budget", None)
        used = 0
        if budget is not None:
            since = datetime.now(UTC) - BUDGET_WINDOW
            used = loaded_bytes_since(self.journal, cfg.tenant, self.key, since)
        limits = [
            x
            for x in (cfg.options.messages.max_size_bytes, self.dest.layout.max_message_size)
            if x is not None
        ]
        max_size = min(limits) if limits else None
        for batch in _batches(entries):
            folder = self.target.get(batch[0].folder)
            ready: list[LedgerEntry] = []
            for e in batch:
                assert e.id is not None
                if folder is None or (cfg.options.messages.skip_deleted and is_deleted(e.flags)):
                    self.journal.set_load_state([e.id], LoadState.skipped)
                    self.counts.skipped += 1
                elif max_size is not None and e.size > max_size:
                    self.fail(
                        e,
                        "SXM-DST-004",
                        f"message of {e.size} bytes is over the limit of {max_size}",
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
                    self.append_batch(folder, fits)
                    return "SXM-DST-006"
            self.append_batch(folder, ready)
        return None

    def append_batch(self, folder: str, batch: Sequence[LedgerEntry]) -> None:
        table = self.cfg.options.flags.map
        allowed = self.dest.layout.keywords_allowed
        rows = list(batch)
        ids = [e.id for e in rows if e.id is not None]
        # Committed before the APPEND: a crash from here on leaves rows to reconcile, not redo.
        self.journal.set_load_state(ids, LoadState.appending, dest_folder=folder)
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            if not rows:
                return
            items = [
                AppendItem(
                    body=self.store.get(e.sha256, user=self.key),
                    flags=map_flags(e.flags, table, keywords_allowed=allowed).flags,
                    internaldate=e.internaldate,
                )
                for e in rows
            ]
            try:
                results = self.dest.append_many(folder, items)
                break
            except TransientError:
                if attempt == BATCH_ATTEMPTS:
                    raise
                # The connection broke mid-APPEND: part of the batch may be stored. Look for
                # each message before sending the rest again.
                rows = [
                    e
                    for e in rows
                    if not self.reconciled(replace(e, load_state=LoadState.appending))
                ]
        loaded: list[tuple[int, str | None, frozenset[str] | None]] = []
        for e, item, result in zip(rows, items, results, strict=True):
            assert e.id is not None
            if isinstance(result, ItemError):
                self.fail(e, result.code, result.message)
            else:
                loaded.append((e.id, result, item.flags))
                if result is not None:
                    self.claimed[folder].add(result)
                self.counts.appended += 1
                self.counts.bytes += len(item.body)
        mark_loaded(self.journal, folder, loaded)

    def fail(self, e: LedgerEntry, code: str, detail: str) -> None:
        assert e.id is not None
        self.journal.set_load_state([e.id], LoadState.failed, error_code=code, error_detail=detail)
        self.counts.failed += 1
        self.failures.append(ItemFailure(e.folder, e.uid, code, detail))


# --- flag sync -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagSync:
    updated: int
    failures: tuple[ItemFailure, ...]


def sync_flags(cfg: TenantConfig, journal: Journal, dest: Destination, user_key: str) -> FlagSync:
    """Give the destination the current mapped flags of every loaded row of ``user_key`` whose
    flags changed since it was loaded (or are not known there); see the module docstring."""
    table = cfg.options.flags.map
    allowed = dest.layout.keywords_allowed
    todo: dict[str, list[tuple[LedgerEntry, frozenset[str]]]] = defaultdict(list)
    claimed: dict[str, set[str]] = defaultdict(set)
    for e, given in journal.loaded_with_dest_flags(cfg.tenant, user_key):
        assert e.dest_folder is not None  # the query asks for it
        if e.dest_uid is not None:
            claimed[e.dest_folder].add(e.dest_uid)
        want = map_flags(e.flags, table, keywords_allowed=allowed).flags
        if want != given:
            todo[e.dest_folder].append((e, want))
    if not todo:
        return FlagSync(0, ())
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user_key)
    present = set(dest.list_folders())
    updated = 0
    failures: list[ItemFailure] = []
    for folder, rows in sorted(todo.items()):
        if folder not in present:
            failures += [_gone(e, folder) for e, _ in rows]
            continue
        by_id: dict[str, tuple[LedgerEntry, frozenset[str]]] = {}
        found_ids: dict[int, str] = {}
        for e, want in rows:
            ident = e.dest_uid or _look_up(dest, store, folder, e, claimed[folder], user_key)
            if ident is None:
                failures.append(_gone(e, folder))
                continue
            if e.dest_uid is None:
                assert e.id is not None
                found_ids[e.id] = ident
                claimed[folder].add(ident)
            by_id[ident] = (e, want)
        refused = dest.set_flags(folder, {i: want for i, (_, want) in by_id.items()})
        done: list[tuple[int, frozenset[str] | None, str | None]] = []
        for ident, (e, want) in by_id.items():
            assert e.id is not None
            err = refused.get(ident)
            if err is None:
                done.append((e.id, want, found_ids.get(e.id)))
            else:
                failures.append(ItemFailure(e.folder, e.uid, err.code, err.message))
        journal.set_dest_flags(done)
        updated += len(done)
    return FlagSync(updated, tuple(failures))


def _look_up(
    dest: Destination,
    store: StagingStore,
    folder: str,
    e: LedgerEntry,
    claimed: set[str],
    user_key: str,
) -> str | None:
    """The destination id of a loaded row the destination gave none for (no UIDPLUS)."""
    if store.has(e.sha256):
        body = store.get(e.sha256, user=user_key)
        message_id, fingerprint = message_id_of(body), fingerprint_of(body, e.size)
    elif e.message_id is not None:
        message_id, fingerprint = e.message_id, ""
    else:
        return None  # neither bytes nor a Message-ID left to recognise it by
    return dest.find(
        folder, message_id=message_id, size=e.size, fingerprint=fingerprint, exclude=claimed
    )


def _gone(e: LedgerEntry, folder: str) -> ItemFailure:
    return ItemFailure(
        e.folder,
        e.uid,
        "SXM-DST-008",
        f"not found in destination folder {folder!r}; its flags were not updated",
    )
