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

**Several connections.** An IMAP destination with ``destination.connections_per_user`` > 1
gets step 3 over that many connections (this one plus ``connections - 1`` worker threads, each
with its own ``open_destination``), batch by batch in ledger order, slices of one folder
included; steps 1, 2 and 4 stay on the first connection. A connection the destination refuses
is done without; a connection that breaks mid-APPEND hands its batch back, to be reconciled and
appended serially once the workers are done (see :class:`_Run`). Maildir and mbox use one.

A per-user byte budget (``destination.daily_byte_budget``, IMAP only) counts the bytes loaded
in the last 24 hours; when the next message would exceed it the user stops cleanly with
``LoadResult.stopped_code == "SXM-DST-006"`` and resumes in a later run. With several
connections the budget is one, reserved batch by batch in ledger order: the same messages
are loaded as with one connection, and every worker stops after its batch in flight.
"""

from __future__ import annotations

import contextvars
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial

from scalix_migrate.config import TenantConfig
from scalix_migrate.destinations.base import (
    AppendItem,
    Destination,
)
from scalix_migrate.errors import ItemError, MigrationError, TransientError
from scalix_migrate.feed import LoadFeed
from scalix_migrate.flags import FlagMapper, is_deleted, map_flags
from scalix_migrate.folders import FolderPlan, SourceFolderInfo, plan_folders
from scalix_migrate.message_identity import fingerprint_of, message_id_of
from scalix_migrate.records import LedgerEntry, LoadState, ScalixUser
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import FolderRow, Journal, flags_from_text, flags_to_text
from scalix_migrate.user_context import open_destination

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
    connections: int = 1  # destination connections the appends used


@dataclass
class _Counts:
    appended: int = 0
    already_present: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0


def source_folders(
    journal: Journal, tenant: str, user_key: str, entries: Sequence[LedgerEntry]
) -> list[SourceFolderInfo]:
    """The user's folders as the journal knows them (rows without messages included)."""
    infos = {}
    for row in journal.folder_rows(tenant, user_key):
        infos[row.folder] = SourceFolderInfo(row.folder, row.special, row.folder_class)
    for e in entries:
        infos.setdefault(e.folder, SourceFolderInfo(e.folder))
    return list(infos.values())


def load_user(
    cfg: TenantConfig,
    journal: Journal,
    user: ScalixUser,
    *,
    destination: Callable[[TenantConfig, ScalixUser], Destination] = open_destination,
    feed: LoadFeed | None = None,
) -> LoadResult:
    """Load every ``staged``/``appending`` row of ``user`` (see the module docstring).

    With a ``feed`` the load follows an extract that runs at the same time
    (:mod:`scalix_migrate.transfer`): after what is staged already, it appends each batch
    the extract records, until the extract has ended and nothing staged is left.
    """
    tenant, key = cfg.tenant, user.key
    try:
        with destination(cfg, user) as dest:
            # The folder plan is made once, from every folder this run will know, so each
            # folder's destination name is the one a load after the extract would choose.
            listed = feed.listed_folders() if feed is not None else []
            pending = list(
                journal.entries(tenant, key, states=[LoadState.staged, LoadState.appending])
            )
            known = source_folders(journal, tenant, key, pending)
            names = {f.name for f in known}
            plans = plan_folders(
                cfg, [*known, *(f for f in listed if f.name not in names)], dest.layout
            )
            folders = _FolderMaker(journal, dest, tenant, key, plans)
            folders.make(journal.folder_rows(tenant, key), pending)
            run = _Run(cfg, journal, dest, key, {p.source: p.destination for p in plans})
            # Rows left appending by a crash: the dead run's last APPEND may still be landing.
            dest.settle(
                {
                    folder
                    for e in pending
                    if e.load_state is LoadState.appending
                    and (folder := run.target.get(e.folder)) is not None
                }
            )
            # Reconciliation before any APPEND, on this one connection: every claim is known.
            to_append = [e for e in pending if not run.reconciled(e)]
            stopped = run.append_all(to_append, _connections(cfg), partial(destination, cfg, user))
            if feed is not None:
                stopped = _follow(feed, journal, run, folders, tenant, key, stopped)
            synced = sync_flags(cfg, journal, dest, key)
    except BaseException:
        if feed is not None:
            feed.load_failed()
        raise
    c = run.counts
    return LoadResult(
        appended=c.appended,
        already_present=c.already_present,
        skipped=c.skipped,
        failed=c.failed,
        bytes=c.bytes,
        folders_created=folders.created,
        folder_notes=tuple(f"{p.source}: {n}" for p in plans for n in p.notes),
        item_errors=(*run.item_failures(), *synced.failures),
        stopped_code=stopped,
        flags_updated=synced.updated,
        connections=run.connections_used,
    )


def _follow(
    feed: LoadFeed,
    journal: Journal,
    run: _Run,
    folders: _FolderMaker,
    tenant: str,
    key: str,
    stopped: str | None,
) -> str | None:
    """Append each batch the running extract records, until it has ended (see load_user).

    On the one connection: the extract is the slower side, and a pool of connections
    opened per batch would cost more logins than it saves."""
    seen, done = 0, False
    while not done and stopped is None:
        seen, done = feed.wait_for_more(seen)
        staged = list(journal.entries(tenant, key, states=[LoadState.staged]))
        folders.make(journal.folder_rows(tenant, key), staged)
        if staged:
            stopped = run.append_all(staged, 1, lambda: run.dest)
    return stopped


class _FolderMaker:
    """Creates planned destination folders once the journal knows their source folder."""

    def __init__(
        self,
        journal: Journal,
        dest: Destination,
        tenant: str,
        key: str,
        plans: Sequence[FolderPlan],
    ) -> None:
        self.journal, self.dest, self.tenant, self.key = journal, dest, tenant, key
        self.plans = {p.source: p for p in plans}
        self.existing = set(dest.list_folders())
        self.done: set[str] = set()
        self.created = 0

    def make(self, folder_rows: Sequence[FolderRow], entries: Sequence[LedgerEntry]) -> None:
        known = {r.folder for r in folder_rows} | {e.folder for e in entries}
        for source in sorted(known - self.done):
            plan = self.plans.get(source)
            if plan is None:
                continue  # not in this run's plan: its rows are skipped as excluded
            self.done.add(source)
            if plan.destination is None:
                continue
            if plan.destination not in self.existing:
                self.dest.ensure_folder(plan.destination)
                self.existing.add(plan.destination)
                self.created += 1
            self.journal.set_dest_folder(self.tenant, self.key, plan.source, plan.destination)


def _connections(cfg: TenantConfig) -> int:
    """Destination connections for one user: IMAP may use several; local sinks one."""
    if cfg.destination.type == "imap":
        return cfg.destination.connections_per_user
    return 1


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


@dataclass(frozen=True)
class _Work:
    """One batch as planned (in ledger order): what to skip, fail and append."""

    index: int
    folder: str | None  # destination folder; None: excluded
    skip: list[LedgerEntry]
    too_big: list[tuple[LedgerEntry, str]]
    ready: list[LedgerEntry]


class _Run:
    """The state of one load: counts, failures, and the destination ids already claimed.

    With several connections (:meth:`append_all`), worker threads take batches in ledger order
    from :meth:`_take` (under ``lock``: the skip/size/budget decisions, and so the outcome, are
    those of a serial run) and append them each on its own connection. A worker whose
    connection breaks mid-APPEND does not reconcile at once (another worker may be storing a
    message with the same Message-ID in that folder, not yet claimed): it hands the batch back
    (its rows stay ``appending``) and stops; after every worker has finished, the main thread
    reconciles those rows on its own connection, then appends what is left serially.
    """

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
        self.failures: dict[int, list[ItemFailure]] = defaultdict(list)  # by batch index
        self.claimed: dict[str, set[str]] = defaultdict(set)
        for _, dest_folder, dest_uid, _, _ in journal.loaded_flag_texts(cfg.tenant, key):
            if dest_uid:
                self.claimed[dest_folder].add(dest_uid)
        self.lock = threading.Lock()
        self.stop = threading.Event()  # budget reached, or a worker failed the user
        self.stopped: str | None = None
        self.error: BaseException | None = None
        self.handed_back: list[_Work] = []
        self.connections_used = 1
        self._plan: Iterator[list[LedgerEntry]] = iter(())
        self._n_batches = 0
        self._index = 0
        self._budget: int | None = None
        self._used = 0
        self._max_size: int | None = None
        self._mappers: dict[bool, FlagMapper] = {}  # by keywords_allowed

    def item_failures(self) -> list[ItemFailure]:
        """Item errors in ledger order (batch by batch), whatever thread met them."""
        return [f for i in sorted(self.failures) for f in self.failures[i]]

    def reconciled(self, e: LedgerEntry, *, index: int = -1) -> bool:
        """For an ``appending`` row: True (and marked loaded) when the destination has it.

        Only ever called with no worker thread appending (see the class docstring)."""
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
        self.journal.mark_loaded(folder, [(e.id, found, None)])
        self.claimed[folder].add(found)
        self.counts.already_present += 1
        return True

    def append_all(
        self,
        entries: Sequence[LedgerEntry],
        connections: int,
        open_more: Callable[[], Destination],
    ) -> str | None:
        """Append in batches over up to ``connections`` destination connections (this one
        and ``open_more()`` ones); return SXM-DST-006 when the byte budget stopped the user."""
        cfg = self.cfg
        self._budget = getattr(cfg.destination, "daily_byte_budget", None)
        if self._budget is not None:
            since = datetime.now(UTC) - BUDGET_WINDOW
            self._used = self.journal.loaded_bytes_since(cfg.tenant, self.key, since)
        limits = [
            x
            for x in (cfg.options.messages.max_size_bytes, self.dest.layout.max_message_size)
            if x is not None
        ]
        self._max_size = min(limits) if limits else None
        batches = list(_batches(entries))
        self._plan, self._n_batches = iter(batches), len(batches)
        workers = min(connections, len(batches))
        if workers > 1:
            self._run_parallel(workers, open_more)
            # Batches handed back by broken connections: reconcile now that nothing is in
            # flight (and what the server was still storing has landed), then append the rest
            # on this connection (with its own retries).
            self.dest.settle({w.folder for w in self.handed_back if w.folder is not None})
            for work in sorted(self.handed_back, key=lambda w: w.index):
                assert work.folder is not None
                rows = [
                    e
                    for e in work.ready
                    if not self.reconciled(replace(e, load_state=LoadState.appending))
                ]
                self.append_batch(self.dest, work.folder, rows, index=work.index, parallel=False)
        self._work(self.dest, parallel=False)  # what no worker took (all of it when serial)
        return self.stopped

    def _run_parallel(self, workers: int, open_more: Callable[[], Destination]) -> None:
        threads = [
            threading.Thread(
                # In a copy of this context: the user step's reconnect tally counts theirs.
                target=contextvars.copy_context().run,
                args=(self._extra_worker, open_more),
                name=f"load-{self.key}-{n}",
            )
            for n in range(1, workers)
        ]
        for t in threads:
            t.start()
        try:
            self._guarded(self.dest)
        finally:
            for t in threads:
                # Each worker stops after its batch in flight (bounded by the sink's timeouts).
                t.join()
        if self.error is not None:
            raise self.error

    def _extra_worker(self, open_more: Callable[[], Destination]) -> None:
        with ExitStack() as stack:
            try:
                dest = stack.enter_context(open_more())
            except MigrationError:
                # The destination allows fewer connections than configured: the others go on.
                return
            with self.lock:
                self.connections_used += 1
            self._guarded(dest)

    def _guarded(self, dest: Destination) -> None:
        try:
            self._work(dest, parallel=True)
        except BaseException as exc:  # re-raised by the main thread after the join
            with self.lock:
                if self.error is None:
                    self.error = exc
            self.stop.set()

    def _take(self) -> _Work | None:
        """The next batch, planned in ledger order; None when done or stopped."""
        cfg = self.cfg
        with self.lock:
            if self.stop.is_set():
                return None
            batch = next(self._plan, None)
            if batch is None:
                return None
            index, self._index = self._index, self._index + 1
            folder = self.target.get(batch[0].folder)
            skip, too_big, ready = [], [], []
            for e in batch:
                if folder is None or (cfg.options.messages.skip_deleted and is_deleted(e.flags)):
                    skip.append(e)
                elif self._max_size is not None and e.size > self._max_size:
                    detail = f"message of {e.size} bytes is over the limit of {self._max_size}"
                    too_big.append((e, detail))
                else:
                    ready.append(e)
            if self._budget is not None and folder is not None:
                fits = 0
                while fits < len(ready) and self._used + ready[fits].size <= self._budget:
                    self._used += ready[fits].size
                    fits += 1
                if fits < len(ready):
                    ready = ready[:fits]
                    self.stopped = "SXM-DST-006"
                    self.stop.set()
            return _Work(index, folder, skip, too_big, ready)

    def _work(self, dest: Destination, *, parallel: bool) -> None:
        for _ in range(self._n_batches + 1):  # _take hands out each batch once
            work = self._take()
            if work is None:
                return
            if work.skip:
                self.journal.set_load_state([_id(e) for e in work.skip], LoadState.skipped)
                with self.lock:
                    self.counts.skipped += len(work.skip)
            for e, detail in work.too_big:
                self.fail(e, "SXM-DST-004", detail, index=work.index)
            if not work.ready or work.folder is None:
                continue
            try:
                self.append_batch(
                    dest, work.folder, work.ready, index=work.index, parallel=parallel
                )
            except TransientError:
                if not parallel:
                    raise
                with self.lock:
                    self.handed_back.append(work)
                return  # this connection is unwell: the others (and the main thread) go on

    def append_batch(
        self,
        dest: Destination,
        folder: str,
        batch: Sequence[LedgerEntry],
        *,
        index: int,
        parallel: bool,
    ) -> None:
        """Append one batch: rows ``appending`` (committed) first, ``loaded`` after.

        Serially, a broken connection is retried after reconciling the batch; in parallel the
        TransientError goes to the caller, which hands the batch back (see the class doc)."""
        mapper = self._mapper(dest)
        rows = list(batch)
        # Committed before the APPEND: a crash from here on leaves rows to reconcile, not redo.
        self.journal.set_load_state([_id(e) for e in rows], LoadState.appending, dest_folder=folder)
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            if not rows:
                return
            items = [
                AppendItem(
                    body=self.store.get(e.sha256, user=self.key),
                    flags=mapper(e.flags),
                    internaldate=e.internaldate,
                )
                for e in rows
            ]
            try:
                results = dest.append_many(folder, items)
                break
            except TransientError:
                if parallel or attempt == BATCH_ATTEMPTS:
                    raise
                # The connection broke mid-APPEND: part of the batch may be stored, or still
                # being stored. Let it land, then look for each message before sending again.
                dest.settle([folder])
                rows = [
                    e
                    for e in rows
                    if not self.reconciled(replace(e, load_state=LoadState.appending))
                ]
        loaded: list[tuple[int, str | None, frozenset[str] | None]] = []
        appended = appended_bytes = 0
        for e, item, result in zip(rows, items, results, strict=True):
            if isinstance(result, ItemError):
                self.fail(e, result.code, result.message, index=index)
            else:
                loaded.append((_id(e), result, item.flags))
                appended += 1
                appended_bytes += len(item.body)
        self.journal.mark_loaded(folder, loaded)
        with self.lock:
            self.claimed[folder].update(u for _, u, _ in loaded if u is not None)
            self.counts.appended += appended
            self.counts.bytes += appended_bytes

    def _mapper(self, dest: Destination) -> FlagMapper:
        allowed = dest.layout.keywords_allowed
        mapper = self._mappers.get(allowed)
        if mapper is None:
            mapper = FlagMapper(self.cfg.options.flags.map, keywords_allowed=allowed)
            self._mappers[allowed] = mapper
        return mapper

    def fail(self, e: LedgerEntry, code: str, detail: str, *, index: int) -> None:
        self.journal.set_load_state(
            [_id(e)], LoadState.failed, error_code=code, error_detail=detail
        )
        with self.lock:
            self.counts.failed += 1
            self.failures[index].append(ItemFailure(e.folder, e.uid, code, detail))


def _id(e: LedgerEntry) -> int:
    assert e.id is not None  # rows read from the journal
    return e.id


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
    # A mailbox has few distinct flag sets: map each once, compare the stored texts.
    wanted: dict[str, tuple[str, frozenset[str]]] = {}
    stale: dict[int, frozenset[str]] = {}
    for row_id, dest_folder, dest_uid, flags, given in journal.loaded_flag_texts(
        cfg.tenant, user_key
    ):
        if dest_uid is not None:
            claimed[dest_folder].add(dest_uid)
        if flags not in wanted:
            mapped = map_flags(flags_from_text(flags), table, keywords_allowed=allowed).flags
            wanted[flags] = (flags_to_text(mapped), mapped)
        want_text, want = wanted[flags]
        if want_text != given:  # None (not known) differs too
            stale[row_id] = want
    for e in journal.entries_by_id(list(stale)):
        assert e.dest_folder is not None  # the query asks for it
        assert e.id is not None
        todo[e.dest_folder].append((e, stale[e.id]))
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
