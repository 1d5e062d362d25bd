"""Content-addressed message store: one user's messages in pack files, found by SHA-256.

Layout: ``<root>/<tenant>/<user>/packs/<name>.pack``. A pack holds the messages of one
extract batch back to back, then an index (each message's SHA-256, offset and length) and a
footer (magic, count, the index's own SHA-256)::

    [message bytes ...][index: count x (32-byte sha256, u64 offset, u64 length)]
    [footer: b"SXMPACK1", u64 count, 32-byte sha256 of the index]

Why packs and not a file per message: creating a file costs a journal transaction of the file
system, and on a disk that is also busy with fsyncs it waits for them. Profiled (bench/RESULTS.md,
"Staging in packs"), the create of each message's temp file was 39 % of the extract thread's
time; a pack per batch is one create, one fsync and one rename per ~100 messages.

Durability is per batch and by rename, as git does for its packs: a batch writes a temp pack
(``.tmp-<host>-<pid>-<n>``), and :func:`sync_batches` writes its index, fsyncs it, renames it to
its final name and fsyncs the directory. Only then does the caller record the batch in the
journal, so the journal never points at bytes that a crash can lose: a ``.pack`` name exists
only for a pack whose bytes were synced before it got that name, and a temp pack left by a crash
is never read (this host's dead processes' temp packs are removed when the store is next
opened). Every read checks the bytes against their hash (:meth:`StagingStore.get`); a pack whose
index does not match its footer is skipped, so its messages read as missing (SXM-STG-001:
extract again). A batch that finds a message already in a pack syncs that pack and its
directory again before the journal records it (the pack's writer may have crashed between its
rename and its directory sync).

A stage written by an earlier version (a file per message, ``<root>/<aa>/<sha256>``) is still
read; new messages go to packs. The store is a cache: the journal is the truth.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import socket
import struct
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from scalix_migrate.errors import UserError
from scalix_migrate.private import FILE_MODE, private_dir

_SAFE = re.compile(r"[^A-Za-z0-9@._+-]")
#: concurrent fsyncs at the end of a round of batches (bounded: the machine's disks are shared)
FSYNC_THREADS = 8
_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None

PACKS = "packs"
PACK_SUFFIX = ".pack"
_TMP_PREFIX = ".tmp-"
_MAGIC = b"SXMPACK1"
_ENTRY = struct.Struct(">32sQQ")  # sha256, offset, length
_FOOTER = struct.Struct(">8sQ32s")  # magic, count, sha256 of the index
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:40] or "host"
# Temp names unique within the host (pid + counter); O_EXCL still refuses a name that exists.
_TMP_SEQ = itertools.count()


def _fsync_pool() -> ThreadPoolExecutor:
    """One pool for the process: a pool per batch started eight threads every time."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=FSYNC_THREADS, thread_name_prefix="sxm-fsync")
        return _POOL


def _forget_in_child() -> None:
    global _POOL
    _POOL = None  # a forked child has none of its parent's threads
    _INDEXES.clear()  # nor its open batches


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_component(name: str) -> str:
    """A file-system-safe, collision-resistant directory name for a user key."""
    cleaned = _SAFE.sub("_", name)[:80] or "_"
    if cleaned != name:
        cleaned += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return cleaned


@dataclass(frozen=True, slots=True)
class _Location:
    pack: str  # file name within the packs directory (one string object per pack)
    offset: int
    length: int


class _PackIndex:
    """Where each staged message of one user is, shared by every store of that user in the
    process (the load's store finds what the extract's store just wrote without a re-scan)."""

    def __init__(self, packs_dir: str) -> None:
        self.packs_dir = packs_dir
        self._where: dict[str, _Location] = {}
        self._seen: set[str] = set()  # pack names read (or found unreadable)
        self._lock = threading.Lock()
        self._scanned = False

    def find(self, digest: str, *, rescan: bool) -> _Location | None:
        """The location of ``digest``; with ``rescan``, look for packs written since (by
        another process or worker) before answering that there is none."""
        if not self._scanned:
            self._scan(first=True)
        where = self._where.get(digest)
        if where is None and rescan:
            self._scan(first=False)
            where = self._where.get(digest)
        return where

    def add(self, pack: str, entries: Sequence[tuple[str, int, int]]) -> None:
        with self._lock:
            self._seen.add(pack)
            for digest, offset, length in entries:
                self._where.setdefault(digest, _Location(pack, offset, length))

    def forget(self, pack: str) -> None:
        """Drop a pack that is gone (a cleared stage): its messages are staged again."""
        with self._lock:
            self._where = {d: w for d, w in self._where.items() if w.pack != pack}
            self._seen.discard(pack)

    def _scan(self, *, first: bool) -> None:
        with self._lock:
            try:
                names = os.listdir(self.packs_dir)
            except FileNotFoundError:
                names = []
            for name in names:
                if name.endswith(PACK_SUFFIX) and name not in self._seen:
                    self._seen.add(name)
                    for digest, offset, length in _read_index(f"{self.packs_dir}/{name}"):
                        self._where.setdefault(digest, _Location(name, offset, length))
                elif first and name.startswith(_TMP_PREFIX):
                    _remove_if_orphaned(f"{self.packs_dir}/{name}", name)
            self._scanned = True


_INDEXES: weakref.WeakValueDictionary[str, _PackIndex] = weakref.WeakValueDictionary()
_INDEXES_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_forget_in_child)


def _index_for(packs_dir: str) -> _PackIndex:
    with _INDEXES_LOCK:
        index = _INDEXES.get(packs_dir)
        if index is None:
            index = _PackIndex(packs_dir)
            _INDEXES[packs_dir] = index
        return index


def _read_index(path: str) -> list[tuple[str, int, int]]:
    """A pack's index, or nothing when the pack is short, foreign or damaged (its messages
    then read as missing: the journal's rows are extracted again)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size < _FOOTER.size:
                return []
            fh.seek(size - _FOOTER.size)
            magic, count, index_hash = _FOOTER.unpack(fh.read(_FOOTER.size))
            start = size - _FOOTER.size - count * _ENTRY.size
            if magic != _MAGIC or start < 0:
                return []
            fh.seek(start)
            block = fh.read(count * _ENTRY.size)
    except OSError:
        return []
    if hashlib.sha256(block).digest() != index_hash:
        return []
    out = []
    for raw, offset, length in _ENTRY.iter_unpack(block):
        if offset + length > start:
            return []
        out.append((raw.hex(), offset, length))
    return out


def _remove_if_orphaned(path: str, name: str) -> None:
    """Remove a temp pack of a process of this host that no longer runs (a crashed batch)."""
    parts = name[len(_TMP_PREFIX) :].rsplit("-", 2)
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return  # another host's (shared storage) or not ours: leave it
    pid = int(parts[1])
    if pid == os.getpid():
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        with suppress(FileNotFoundError):
            os.unlink(path)
    except PermissionError:
        return  # alive, another account's


class StagingStore:
    """Messages of one user, by hash."""

    def __init__(self, root: Path, tenant: str, user_key: str) -> None:
        self.base = Path(root)
        self.root = self.base / safe_component(tenant) / safe_component(user_key)
        self._root = str(self.root)  # the hot paths join strings: pathlib cost a tenth
        self.packs_dir = f"{self._root}/{PACKS}"
        self._index = _index_for(self.packs_dir)
        self._chain_synced = False  # the directories above the packs, once per store

    def _legacy_file(self, sha256: str) -> str:
        """Where an earlier version staged a message (a file per message)."""
        return f"{self._root}/{sha256[:2]}/{sha256}"

    def has(self, sha256: str) -> bool:
        return self._index.find(sha256, rescan=True) is not None or os.path.exists(
            self._legacy_file(sha256)
        )

    def put(self, data: bytes) -> str:
        """Store ``data`` (once), durably, and return its hash (a batch of one)."""
        with self.batch() as batch:
            return batch.put(data)

    @contextmanager
    def batch(self) -> Iterator[StagingBatch]:
        """Write several messages, then make them durable together (see the module doc).

        On an exception nothing is synced and the batch's temp pack is removed: nothing
        refers to it.
        """
        batch = StagingBatch(self)
        try:
            yield batch
        except BaseException:
            batch.discard()
            raise
        batch.sync()

    def get(self, sha256: str, *, user: str | None = None) -> bytes:
        """Read a staged message and check it still matches its hash."""
        where = self._index.find(sha256, rescan=True)
        try:
            if where is not None:
                with open(f"{self.packs_dir}/{where.pack}", "rb") as fh:
                    fh.seek(where.offset)
                    data = fh.read(where.length)
            else:
                with open(self._legacy_file(sha256), "rb") as fh:
                    data = fh.read()
        except FileNotFoundError:
            raise UserError(
                f"staged message {sha256[:12]} is missing", code="SXM-STG-001", user=user
            ) from None
        if sha256_hex(data) != sha256:
            raise UserError(
                f"staged message {sha256[:12]} is damaged", code="SXM-STG-001", user=user
            )
        return data

    def size_bytes(self) -> int:
        if not self.root.exists():
            return 0
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class StagingBatch:
    """The messages of one batch, in one temp pack until :func:`sync_batches` makes it a pack.

    ``put`` runs in the extract thread, ``sync_batches`` in the committer's: a batch is handed
    over whole and not touched by its writer afterwards.
    """

    store: StagingStore
    _file: BinaryIO | None = None
    _tmp: str = ""
    _size: int = 0
    _entries: list[tuple[str, int, int]] = field(default_factory=list)
    _pending: set[str] = field(default_factory=set)
    #: packs this batch relies on without having written them (their messages were there)
    _relied_on: set[str] = field(default_factory=set)

    def put(self, data: bytes) -> str:
        """Append ``data`` to the batch's pack (once) and return its hash; durable at sync."""
        digest = sha256_hex(data)
        if digest in self._pending:
            return digest
        where = self.store._index.find(digest, rescan=False)
        if where is not None:
            if os.path.exists(f"{self.store.packs_dir}/{where.pack}"):
                self._relied_on.add(where.pack)
                return digest
            self.store._index.forget(where.pack)  # the stage was cleared since: write anew
        if self._file is None:
            self._open()
        assert self._file is not None
        self._file.write(data)
        self._entries.append((digest, self._size, len(data)))
        self._pending.add(digest)
        self._size += len(data)
        return digest

    def _open(self) -> None:
        packs = self.store.packs_dir
        self._tmp = f"{packs}/{_TMP_PREFIX}{_HOST}-{os.getpid()}-{next(_TMP_SEQ)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:  # 0600: the umask can only take bits away
            fd = os.open(self._tmp, flags, FILE_MODE)
        except FileNotFoundError:  # the first batch of the user (or a cleared stage)
            private_dir(Path(packs))
            self.store._chain_synced = False  # directories above may be new too
            fd = os.open(self._tmp, flags, FILE_MODE)
        self._file = os.fdopen(fd, "wb")

    def _seal(self) -> str | None:
        """Write the index and footer; return the temp pack's path (None: nothing written)."""
        if self._file is None:
            return None
        index = b"".join(_ENTRY.pack(bytes.fromhex(d), o, n) for d, o, n in self._entries)
        self._file.write(index)
        self._file.write(_FOOTER.pack(_MAGIC, len(self._entries), hashlib.sha256(index).digest()))
        self._file.flush()
        return self._tmp

    def discard(self) -> None:
        """Forget the batch: close and remove its temp pack (nothing refers to it)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            with suppress(FileNotFoundError):
                os.unlink(self._tmp)
        self._entries.clear()
        self._pending.clear()
        self._relied_on.clear()

    def sync(self) -> None:
        """Make the batch durable (see :func:`sync_batches`)."""
        sync_batches([self])


def sync_batches(batches: Sequence[StagingBatch]) -> None:
    """Make ``batches`` durable in one round: every temp pack and every pack relied on is
    fsynced, the temp packs are renamed to their final names, and then the directories that
    gained a name are fsynced (the packs directory, and once per store the ones above it, up
    to the staging base). Only after that do their messages become readable by hash."""
    written: list[tuple[StagingBatch, str]] = []
    to_sync: set[str] = set()
    for b in batches:
        tmp = b._seal()
        if tmp is not None:
            written.append((b, tmp))
            to_sync.add(tmp)
        to_sync.update(f"{b.store.packs_dir}/{p}" for p in b._relied_on)
    if not to_sync:
        return
    pool = _fsync_pool()
    list(pool.map(_fsync, sorted(to_sync)))  # data before names
    named: list[tuple[StagingBatch, str]] = []
    for b, tmp in written:
        assert b._file is not None
        b._file.close()
        b._file = None
        name = f"{uuid.uuid4().hex}{PACK_SUFFIX}"
        os.replace(tmp, f"{b.store.packs_dir}/{name}")
        named.append((b, name))
    dirs: set[str] = set()
    stores = {id(b.store): b.store for b in batches}.values()
    for store in stores:
        dirs.add(store.packs_dir)
        if not store._chain_synced:
            up = store.root
            while up != store.base.parent and up != up.parent:
                dirs.add(str(up))  # a directory this (or an unsynced) batch may have made
                up = up.parent
    list(pool.map(_fsync, sorted(dirs)))
    for store in stores:
        store._chain_synced = True
    for b, name in named:
        b.store._index.add(name, b._entries)
    for b in batches:
        b._entries = []
        b._pending.clear()
        b._relied_on.clear()
