"""Per-user extract: Scalix IMAP -> staging store + journal, incremental, in bounded memory.

``extract_user`` walks the user's folders (after ``options.folders`` include/exclude), opens
each with EXAMINE, re-plans it through :meth:`Journal.open_folder` when UIDVALIDITY changed,
refreshes the flags of messages it already knows, and fetches only UIDs above the folder's
cursor. Messages are planned by RFC822.SIZE into batches bounded by ``fetch_batch_messages``
and ``fetch_batch_bytes``; each batch is staged (content-addressed, atomic) and then recorded
with :meth:`Journal.record_batch`, which writes the ledger rows and advances the cursor in one
transaction. A connection dropped mid-folder therefore loses at most the batch in flight, and
the retry resumes from the cursor without doubling anything.

What is not staged is still recorded, so nothing vanishes silently:

* outside ``options.messages.since/before`` (by INTERNALDATE): ``skipped``;
* larger than ``max_size_bytes`` (by RFC822.SIZE): ``skipped`` with ``SXM-IMAP-006``;
* ``\\Deleted`` on the source with ``skip_deleted``: staged, but ``skipped``;
* not returned by the server: ``failed`` with ``SXM-IMAP-004`` (folder and UID recorded).

Rows that carry no staged bytes get a placeholder hash ``unfetched-<uidvalidity>-<uid>``.

Retry of failed messages: the cursor moves past a UID whose FETCH failed, so the next extract
of that folder (same UIDVALIDITY) first asks again for the UIDs of its ``unfetched-`` failed
rows. A message that arrives now is staged and its row becomes a normal ``staged`` row (real
hash, size, Message-ID) through :meth:`Journal.record_refetched`; one that still fails stays
``failed`` with the new reason. After a UIDVALIDITY change the old rows are not retried: the
re-planned folder fetches every message again under its new UIDs.

Durability: each batch's files are written without per-file fsync; a committer thread then
syncs them together and only after that records the batch in the journal (batches in UID
order, at most four waiting; what waits is synced in one round), while the extract fetches
the next batch or opens the next folder. A folder's "read through" HIGHESTMODSEQ is recorded
after its last batch, by the same thread; every batch fetched whole is committed before
``extract_user`` returns or raises, even when a later FETCH failed.

A user without a message store: Scalix creates the store at first sign-on (scalix.md §0), so
a login that works on an empty store lists no messages and is simply an empty mailbox. When
discovery said ``has_message_store is False`` and the mboxadmin login is refused, that refusal
is taken to be the missing store: the user is an empty mailbox (``SXM-USR-002``), not a failure.
"""

from __future__ import annotations

import fnmatch
import logging
import queue
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

from scalix_migrate import groupware
from scalix_migrate.config import FolderOptions, Phase, TenantConfig
from scalix_migrate.errors import ItemError, UserError
from scalix_migrate.feed import LoadFeed, LoadStopped
from scalix_migrate.folder_names import FINDING_CODE, accepted, bad_folder_names
from scalix_migrate.message_identity import message_id_of
from scalix_migrate.ratelimit import limiter_for
from scalix_migrate.records import (
    FetchedMessage,
    FolderCursor,
    ItemClass,
    LedgerEntry,
    LoadState,
    ScalixUser,
    SourceFolder,
)
from scalix_migrate.scalix.imap_source import META_CHUNK, FetchFailure, MessageInfo, ScalixMailbox
from scalix_migrate.staging import StagingBatch, StagingStore, sync_batches
from scalix_migrate.state import FolderRow, Journal
from scalix_migrate.user_context import open_source

log = logging.getLogger(__name__)

_CLASS_BY_PREFIX = [  # X-Scalix-Class (IPM.*) prefix -> item class; first match wins
    ("ipm.appointment", ItemClass.appointment),
    ("ipm.contact", ItemClass.contact),
    ("ipm.distlist", ItemClass.contact),
    ("ipm.task", ItemClass.task),  # IPM.Task, IPM.TaskRequest*
    ("ipm.stickynote", ItemClass.note),
    ("ipm.activity", ItemClass.journal),
]
# Printable ASCII, tab, CR, LF only: str.splitlines() in the email parser also breaks lines at
# other control characters, so those blocks go to it.
_PLAIN_HEAD = re.compile(rb"[\x20-\x7e\t\r\n]*\Z")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]*:")  # feedparser's headerRE, less "From "
_CLASS_BY_FOLDER = {
    "ipf.appointment": ItemClass.appointment,
    "ipf.contact": ItemClass.contact,
    "ipf.task": ItemClass.task,
    "ipf.stickynote": ItemClass.note,
    "ipf.journal": ItemClass.journal,
}


@dataclass(frozen=True)
class ItemProblem:
    """A message that was not staged, and why (for the report)."""

    folder: str
    uid: int | None
    code: str | None
    detail: str


@dataclass(frozen=True)
class ExtractResult:
    """Counts of one extract run of one user. ``found`` counts UIDs above the cursors."""

    user: str
    phase: Phase
    folders: int
    found: int
    staged: int
    skipped: int
    failed: int
    bytes: int
    flags_refreshed: int = 0
    empty_folders: tuple[str, ...] = ()
    replanned_folders: tuple[str, ...] = ()
    ics_exported: int = 0
    vcf_exported: int = 0
    properties_only: int = 0  # groupware items kept only as messages (scalix-properties)
    no_message_store: bool = False
    item_errors: tuple[ItemProblem, ...] = ()
    retried: int = 0  # earlier FETCH failures asked for again (not counted in ``found``)
    recovered: int = 0  # of those, staged now (counted in ``staged``)


@dataclass
class _Tally:
    folders: int = 0
    found: int = 0
    staged: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    flags_refreshed: int = 0
    ics: int = 0
    vcf: int = 0
    properties_only: int = 0
    retried: int = 0
    recovered: int = 0
    empty: list[str] = field(default_factory=list)
    replanned: list[str] = field(default_factory=list)
    problems: list[ItemProblem] = field(default_factory=list)

    def result(self, user: str, phase: Phase, *, no_store: bool = False) -> ExtractResult:
        return ExtractResult(
            user=user,
            phase=phase,
            folders=self.folders,
            found=self.found,
            staged=self.staged,
            skipped=self.skipped,
            failed=self.failed,
            bytes=self.bytes,
            flags_refreshed=self.flags_refreshed,
            empty_folders=tuple(self.empty),
            replanned_folders=tuple(self.replanned),
            ics_exported=self.ics,
            vcf_exported=self.vcf,
            properties_only=self.properties_only,
            no_message_store=no_store,
            item_errors=tuple(self.problems),
            retried=self.retried,
            recovered=self.recovered,
        )


def select_folders(found: Sequence[SourceFolder], options: FolderOptions) -> list[SourceFolder]:
    """Selectable folders whose decoded name passes include (if any) and not exclude."""

    def hit(name: str, patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    return [
        f
        for f in found
        if f.selectable
        and (not options.include or hit(f.name, options.include))
        and not hit(f.name, options.exclude)
    ]


def refuse_bad_folder_names(
    cfg: TenantConfig, user: ScalixUser, listing: Sequence[SourceFolder]
) -> None:
    """Refuse the user before anything is read when a folder name contains ``/`` or ``\\``
    (:mod:`scalix_migrate.folder_names`), unless preflight.accept accepts PF-USR-005 for it.
    Preflight checks this for users not migrated yet; for a finished user the transfer's
    own listing is the check."""
    if accepted(FINDING_CODE, user.key, cfg.preflight.accept):
        return
    bad = bad_folder_names(listing)
    if bad:
        raise UserError(
            "; ".join(bad) + ": copied as it is, it would arrive as nested folders",
            code="SXM-USR-004",
            user=user.key,
        )


def _headers(body: bytes) -> tuple[str | None, str | None]:
    """(Message-ID, X-Scalix-Class) read from the header block only."""
    end = body.find(b"\r\n\r\n")
    if end < 0:
        end = body.find(b"\n\n")
    head = body if end < 0 else body[: end + 2]
    fast = _headers_plain(head)
    if fast is not None:
        return fast
    msg = BytesHeaderParser(policy=compat32).parsebytes(head)
    mid, cls = msg.get("Message-ID"), msg.get("X-Scalix-Class")
    return (
        str(mid).strip() or None if mid is not None else None,
        str(cls).strip() or None if cls is not None else None,
    )


def _headers_plain(head: bytes) -> tuple[str | None, str | None] | None:
    """``_headers`` for a plain header block, as the ``email`` parser reads it; else None.

    The ``email`` package cost about a tenth of extract (profiled). Only printable ASCII with
    CRLF or LF line ends and no ``From `` line is read here, following feedparser and
    ``compat32`` rule by rule: a header line is ``name:`` (name without space or colon), a line
    starting with space or tab continues the header before it (or is dropped when there is
    none), a line starting with ``:`` is dropped, any other line ends the header block; the
    value is the text after the colon without leading blanks plus its continuation lines with
    their line ends, right-stripped of CR/LF; the first header of a name (any case) wins.
    """
    if not _PLAIN_HEAD.match(head) or head.count(b"\r") != head.count(b"\r\n"):
        return None
    found: dict[bytes, bytes] = {}
    parts: list[bytes] = []
    for line in [*head.splitlines(keepends=True), b"\n"]:  # a blank line closes the last one
        if line[:1] in (b" ", b"\t"):
            if parts:
                parts.append(line)
            continue
        if parts:
            name, value = parts[0].split(b":", 1)
            value = value.lstrip(b" \t") + b"".join(parts[1:])
            found.setdefault(name.lower(), value.rstrip(b"\r\n"))
            parts = []
        if line.startswith(b"From "):
            return None  # an mbox envelope line: the email parser's own rules
        field = _FIELD_NAME.match(line)
        if field is None:
            break  # a blank line or a line that is no header: the body starts here
        if field.end() > 1:
            parts = [line]

    def value_of(name: bytes) -> str | None:
        raw = found.get(name)
        return None if raw is None else raw.decode("ascii").strip() or None

    return value_of(b"message-id"), value_of(b"x-scalix-class")


def item_class_of(scalix_class: str | None, folder_class: str | None) -> ItemClass:
    """X-Scalix-Class first (the item's own class), the folder's X-FolderClass second."""
    if scalix_class:
        low = scalix_class.lower()
        for prefix, item in _CLASS_BY_PREFIX:
            if low.startswith(prefix):
                return item
        return ItemClass.mail
    return _CLASS_BY_FOLDER.get((folder_class or "").lower(), ItemClass.mail)


def _placeholder(uidvalidity: int, uid: int) -> str:
    return f"unfetched-{uidvalidity}-{uid}"


class _Committer:
    """Makes staged batches durable and records them, one after another, in a thread of its
    own: the extract fetches the next batch (and opens the next folder) while the disk syncs
    this one.

    Order is kept (one thread, a FIFO queue, at most ``DEPTH`` items waiting), so a folder's
    cursor only ever advances over committed batches and its "read through" mark
    (:meth:`folder_done`) is written after its last batch. What is waiting when the thread
    wakes is synced together (one round of fsyncs for several small folders) and then
    recorded batch by batch. The first error stops the committer: nothing after it is
    recorded, and it is raised in the extract thread at the next ``submit``, ``folder_done``
    or ``flush``.
    """

    DEPTH = 4

    def __init__(self, journal: Journal, tenant: str, user_key: str, feed: LoadFeed | None):
        self.journal, self.tenant, self.user_key, self.feed = journal, tenant, user_key, feed
        self._queue: queue.Queue[_Commit | _FolderDone | None] = queue.Queue(maxsize=self.DEPTH)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(
        self,
        files: StagingBatch,
        cursor: FolderCursor,
        entries: list[LedgerEntry],
        highest_uid: int,
        errors: dict[int, tuple[str | None, str]],
    ) -> None:
        self._put(_Commit(files, cursor, entries, highest_uid, errors))

    def folder_done(self, folder: str, uidvalidity: int, modseq: int) -> None:
        """Record the folder's HIGHESTMODSEQ once every batch submitted before is recorded."""
        self._put(_FolderDone(folder, uidvalidity, modseq))

    def _put(self, item: _Commit | _FolderDone) -> None:
        self._raise_error()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"commit-{self.user_key}", daemon=True
            )
            self._thread.start()
        self._queue.put(item)

    def flush(self) -> None:
        """Wait until every submitted item is recorded (or the committer failed)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self) -> None:
        while True:
            items = [self._queue.get()]
            while items[-1] is not None:  # take what is waiting too: one round of fsyncs
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ending = items[-1] is None
            work = [i for i in items if i is not None]
            if self._error is None:  # else drain: nothing after a failed batch is recorded
                self._commit(work)
            else:
                _discard(work)
            if ending:
                return

    def _commit(self, work: list[_Commit | _FolderDone]) -> None:
        try:
            sync_batches([i.files for i in work if isinstance(i, _Commit)])
        except BaseException as exc:  # raised in the extract thread
            self._error = exc
            _discard(work)
            return
        for item in work:
            try:
                if isinstance(item, _FolderDone):
                    # Everything up to the MODSEQ seen at EXAMINE is in the journal now.
                    self.journal.set_folder_modseq(
                        self.tenant, self.user_key, item.folder, item.uidvalidity, item.modseq
                    )
                    continue
                self.journal.record_batch(
                    self.tenant, self.user_key, item.cursor, item.entries, item.highest_uid
                )
                self.journal.set_item_errors(
                    self.tenant, self.user_key, item.cursor.folder, item.cursor.uidvalidity,
                    item.errors,
                )  # fmt: skip
            except BaseException as exc:
                self._error = exc
                return
            if self.feed is not None:
                try:
                    self.feed.batch_recorded()  # the load that follows may append it now
                except LoadStopped as exc:
                    self._error = exc
                    return


def _discard(work: list[_Commit | _FolderDone]) -> None:
    """Remove the temp packs of batches that will not be recorded (nothing refers to them)."""
    for item in work:
        if isinstance(item, _Commit):
            item.files.discard()


@dataclass(frozen=True)
class _Commit:
    files: StagingBatch
    cursor: FolderCursor  # the folder's cursor when it was opened: batches come in UID order
    entries: list[LedgerEntry]
    highest_uid: int
    errors: dict[int, tuple[str | None, str]]


@dataclass(frozen=True)
class _FolderDone:
    folder: str
    uidvalidity: int
    modseq: int


class _FolderRun:
    """Extract one folder: plan, fetch, stage, record. Holds no more than one batch."""

    def __init__(
        self,
        cfg: TenantConfig,
        journal: Journal,
        user: ScalixUser,
        mbox: ScalixMailbox,
        store: StagingStore,
        tally: _Tally,
        feed: LoadFeed | None = None,
    ) -> None:
        self.cfg, self.journal, self.user, self.mbox = cfg, journal, user, mbox
        self.store, self.tally, self.feed = store, tally, feed
        self.committer = _Committer(journal, cfg.tenant, user.key, feed)
        # Rows whose FETCH failed in an earlier run, by (folder, UIDVALIDITY); read once.
        self._unfetched: dict[tuple[str, int], list[LedgerEntry]] | None = None
        msg = cfg.options.messages
        self.since, self.before = msg.since, msg.before

    def _excluded(self, info: MessageInfo) -> tuple[str | None, str] | None:
        """(code, detail) when a message is filtered out before fetching, else None."""
        day = info.internaldate.date()
        if (self.since and day < self.since) or (self.before and day >= self.before):
            return None, f"INTERNALDATE {info.internaldate.isoformat()} outside since/before"
        limit = self.cfg.options.messages.max_size_bytes
        if limit is not None and info.size > limit:
            return "SXM-IMAP-006", f"{info.size} bytes > max_size_bytes {limit}"
        return None

    def run(self, folder: SourceFolder, known: FolderRow | None) -> None:
        tenant, key = self.cfg.tenant, self.user.key
        uidvalidity, exists = self.mbox.examine(folder)
        if known is not None and known.uidvalidity != uidvalidity:
            self.tally.replanned.append(folder.name)
        cursor = self.journal.open_folder(
            tenant, key, folder, uidvalidity, source_count=exists, known=known
        )
        self.tally.folders += 1
        if exists == 0:
            self.tally.empty.append(folder.name)
        # CONDSTORE: the same HIGHESTMODSEQ as when the folder was last read through means no
        # flag changed and no message arrived since; another one names what changed.
        modseq: int | None = getattr(self.mbox, "modseq", None)
        seen = cursor.modseq if modseq is not None else None
        unchanged = modseq is not None and seen == modseq
        if cursor.highest_uid > 0 and exists > 0 and not unchanged:
            current = (
                self.mbox.flags(folder, cursor.highest_uid, changed_since=seen)
                if seen is not None
                else self.mbox.flags(folder, cursor.highest_uid)
            )
            self.tally.flags_refreshed += self.journal.update_flags(
                tenant, key, folder.name, uidvalidity, current
            )
        if exists:
            self._retry_unfetched(folder, cursor)
        uids = self.mbox.uids_above(folder, cursor.highest_uid) if exists and not unchanged else []
        self.tally.found += len(uids)
        for start in range(0, len(uids), META_CHUNK):
            infos = list(self.mbox.message_info(folder, uids[start : start + META_CHUNK]))
            self._planned(folder, cursor, infos)
        if modseq is not None and not unchanged:
            self.committer.folder_done(folder.name, uidvalidity, modseq)

    def _retry_unfetched(self, folder: SourceFolder, cursor: FolderCursor) -> None:
        """Ask again for the messages whose FETCH failed in an earlier run (same UIDVALIDITY)."""
        tenant, key = self.cfg.tenant, self.user.key
        if self._unfetched is None:  # one query for the user's folders, at the first folder
            self._unfetched = self.journal.unfetched_by_folder(tenant, key)
        failed = self._unfetched.pop((folder.name, cursor.uidvalidity), [])
        failed = [e for e in failed if e.sha256 == _placeholder(cursor.uidvalidity, e.uid)]
        for start in range(0, len(failed), META_CHUNK):
            chunk = failed[start : start + META_CHUNK]
            infos = list(self.mbox.message_info(folder, [e.uid for e in chunk]))
            present = {i.uid for i in infos}
            # Expunged since: the row stays failed, with that reason.
            gone: dict[int, tuple[str | None, str]] = {
                e.uid: ("SXM-IMAP-004", "no longer on the source") for e in chunk
            }
            for uid in present:
                del gone[uid]
            for uid, (code, detail) in gone.items():
                self.tally.failed += 1
                self.tally.problems.append(ItemProblem(folder.name, uid, code, detail))
            self.journal.set_item_errors(tenant, key, folder.name, cursor.uidvalidity, gone)
            # A message a filter now excludes is not fetched (the filters apply to retries too).
            wanted = [i for i in infos if self._excluded(i) is None]
            self.tally.retried += len(wanted)
            for batch in self.mbox.fetch(folder, wanted):
                self._record_refetched(folder, cursor, batch)

    def _record_refetched(
        self,
        folder: SourceFolder,
        cursor: FolderCursor,
        batch: list[FetchedMessage | FetchFailure],
    ) -> None:
        entries: list[LedgerEntry] = []
        errors: dict[int, tuple[str | None, str]] = {}
        with self.store.batch() as files:
            for result in batch:
                if isinstance(result, FetchedMessage):
                    entries.append(self._staged(folder, cursor, result, files))
                    self.tally.recovered += 1
                else:
                    errors[result.uid] = ("SXM-IMAP-004", result.reason)
                    self.tally.failed += 1
                    self.tally.problems.append(
                        ItemProblem(folder.name, result.uid, "SXM-IMAP-004", result.reason)
                    )
        # After the batch's fsync: the journal never points at bytes a crash can lose.
        tenant, key = self.cfg.tenant, self.user.key
        self.journal.record_refetched(tenant, key, entries)
        self.journal.set_item_errors(tenant, key, folder.name, cursor.uidvalidity, errors)
        if self.feed is not None:
            self.feed.batch_recorded()

    def _planned(
        self, folder: SourceFolder, cursor: FolderCursor, infos: list[MessageInfo]
    ) -> None:
        """Cut ``infos`` into batches (fetched and filtered together, in UID order)."""
        imap = self.cfg.source.imap
        segment: list[MessageInfo] = []
        count = size = 0
        for info in infos:
            fetch = self._excluded(info) is None
            if (
                fetch
                and segment
                and (
                    count >= imap.fetch_batch_messages or size + info.size > imap.fetch_batch_bytes
                )
            ):
                self._record(folder, cursor, segment)
                segment, count, size = [], 0, 0
            segment.append(info)
            if fetch:
                count, size = count + 1, size + info.size
        if segment:
            self._record(folder, cursor, segment)

    def _record(
        self, folder: SourceFolder, cursor: FolderCursor, segment: list[MessageInfo]
    ) -> None:
        """Fetch and stage one batch, then hand it to the committer (sync + journal)."""
        entries: list[LedgerEntry] = []
        errors: dict[int, tuple[str | None, str]] = {}
        to_fetch = [i for i in segment if self._excluded(i) is None]
        fetched: dict[int, FetchedMessage | FetchFailure] = {}
        for batch in self.mbox.fetch(folder, to_fetch):
            fetched.update((r.uid, r) for r in batch)
        files = StagingBatch(self.store)
        try:
            self._stage_segment(folder, cursor, segment, fetched, files, entries, errors)
            # The committer syncs the pack and only then records the batch: the journal
            # never points at bytes a crash can lose, and the next FETCH runs meanwhile.
            self.committer.submit(files, cursor, entries, max(i.uid for i in segment), errors)
        except BaseException:
            files.discard()  # not handed to the committer: nothing will refer to it
            raise

    def _stage_segment(
        self,
        folder: SourceFolder,
        cursor: FolderCursor,
        segment: list[MessageInfo],
        fetched: dict[int, FetchedMessage | FetchFailure],
        files: StagingBatch,
        entries: list[LedgerEntry],
        errors: dict[int, tuple[str | None, str]],
    ) -> None:
        for info in segment:
            result = fetched.get(info.uid)
            if isinstance(result, FetchedMessage):
                entries.append(self._staged(folder, cursor, result, files))
                continue
            excluded = self._excluded(info)
            if excluded is not None:
                state, (code, detail) = LoadState.skipped, excluded
                self.tally.skipped += 1
            else:
                reason = result.reason if result is not None else "not returned"
                state, code, detail = LoadState.failed, "SXM-IMAP-004", reason
                self.tally.failed += 1
            entries.append(self._unstaged(folder, cursor, info, state))
            errors[info.uid] = (code, detail)
            if code is not None:
                self.tally.problems.append(ItemProblem(folder.name, info.uid, code, detail))

    def _unstaged(
        self, folder: SourceFolder, cursor: FolderCursor, info: MessageInfo, state: LoadState
    ) -> LedgerEntry:
        return LedgerEntry(
            folder=folder.name,
            uidvalidity=cursor.uidvalidity,
            uid=info.uid,
            sha256=_placeholder(cursor.uidvalidity, info.uid),
            size=info.size,
            internaldate=info.internaldate,
            flags=info.flags,
            message_id=None,
            load_state=state,
        )

    def _staged(
        self, folder: SourceFolder, cursor: FolderCursor, msg: FetchedMessage, files: StagingBatch
    ) -> LedgerEntry:
        digest = files.put(msg.body)
        _, scalix_class = _headers(msg.body)
        # The ledger keeps the Message-ID every sink reads back (unfolded the same way): the
        # loader's reconciliation and verify look one up by the other.
        message_id = message_id_of(msg.body)
        item = item_class_of(scalix_class, folder.folder_class)
        outcome = groupware.export_item(
            msg.body, sha256=digest, item_class=item, folder=folder.name, user_root=self.store.root
        )
        if outcome is groupware.GroupwareOutcome.ics:
            self.tally.ics += 1
        elif outcome is groupware.GroupwareOutcome.vcf:
            self.tally.vcf += 1
        elif outcome is groupware.GroupwareOutcome.properties_only:
            self.tally.properties_only += 1
        state = LoadState.staged
        if self.cfg.options.messages.skip_deleted and "\\Deleted" in msg.flags:
            state = LoadState.skipped
            self.tally.skipped += 1
        else:
            self.tally.staged += 1
        self.tally.bytes += msg.size
        return LedgerEntry(
            folder=folder.name,
            uidvalidity=cursor.uidvalidity,
            uid=msg.uid,
            sha256=digest,
            size=msg.size,
            internaldate=msg.internaldate,
            flags=msg.flags,
            message_id=message_id,
            item_class=item,
            load_state=state,
        )


MailboxFactory = Callable[[TenantConfig, ScalixUser], ScalixMailbox]


def extract_user(
    cfg: TenantConfig,
    journal: Journal,
    user: ScalixUser,
    *,
    phase: Phase = Phase.full,
    mailbox: MailboxFactory = open_source,
    feed: LoadFeed | None = None,
    check_folder_names: bool = False,
) -> ExtractResult:
    """Extract one user's mailbox into the staging store and the journal (see module doc).

    ``check_folder_names``: refuse the user when a folder name contains ``/`` or ``\\``
    (:func:`refuse_bad_folder_names`): for a user whose names preflight did not list.

    Raises :class:`UserError` (login refused, LIST failed) or :class:`TransientError`
    (network); a rerun after either resumes from the folder cursors. ``mailbox`` is the
    adapter factory (a seam for tests that wrap the real adapter). ``feed`` is told the
    folders and every recorded batch, for a load that runs at the same time
    (:mod:`scalix_migrate.transfer`); it is not finished here.
    """
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
    conc = cfg.options.concurrency
    limiter = limiter_for(
        cfg.source.imap_host,
        connections=conc.connections_per_server,
        connects_per_second=conc.connects_per_second,
    )
    tally = _Tally()
    known = {r.folder: r for r in journal.folder_rows(cfg.tenant, user.key)}
    try:
        with (
            limiter.connection(wait_s=cfg.source.imap.timeout_s * 10, user=user.key),
            mailbox(cfg, user) as mbox,
        ):
            run = _FolderRun(cfg, journal, user, mbox, store, tally, feed)
            listing = mbox.list_folders()
            if check_folder_names:
                refuse_bad_folder_names(cfg, user, listing)
            selected = select_folders(listing, cfg.options.folders)
            if feed is not None:
                feed.folders_listed(selected)
            try:
                for folder in selected:
                    try:
                        run.run(folder, known.get(folder.name))
                    except ItemError as err:
                        log.warning("%s", err)
                        tally.problems.append(ItemProblem(folder.name, None, err.code, err.message))
            finally:
                # What was fetched whole is committed even when a later fetch failed.
                run.committer.flush()
    except UserError as err:
        if err.code == "SXM-IMAP-002" and user.has_message_store is False:
            log.info("user %s has no message store: extracted as an empty mailbox", user.key)
            return tally.result(user.key, phase, no_store=True)
        raise
    return tally.result(user.key, phase)
