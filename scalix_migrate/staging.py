"""Content-addressed message store: ``<root>/<tenant>/<user>/<aa>/<sha256>``.

A message is stored once per user by the SHA-256 of its bytes, written to a temp file and
renamed into place, so a crash never leaves a half-written message under its final name. The
store decouples the source from a slow destination: load can be retried, and Scalix switched
off, once extraction is complete. It is a cache: the journal is the truth.

Durability is per batch: :meth:`StagingStore.batch` writes its files without a per-file fsync
and, when the with-block ends without an exception, fsyncs every file it handed out (new or
already present: a file left by an earlier batch that crashed before its fsync may still be
only in the page cache) and then their directories, from the hash directories up to the
staging root. The caller records the batch in the journal only after the with-block, so the
journal never points at bytes that a crash can lose. The fsyncs run on a few threads at once so
that the file system commits them together (one journal commit instead of one per file).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from scalix_migrate.errors import UserError
from scalix_migrate.private import private_dir

_SAFE = re.compile(r"[^A-Za-z0-9@._+-]")
#: concurrent fsyncs at the end of a batch (bounded: the machine's disks are shared)
FSYNC_THREADS = 8
_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def _fsync_pool() -> ThreadPoolExecutor:
    """One pool for the process: a pool per batch started eight threads every time."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=FSYNC_THREADS, thread_name_prefix="sxm-fsync")
        return _POOL


def _forget_pool_in_child() -> None:
    global _POOL
    _POOL = None  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_pool_in_child)

# Temp names unique within the process (pid + counter): no random retries as in mkstemp;
# O_EXCL still refuses a name that exists (a crashed earlier process with the same pid).
_TMP_SEQ = itertools.count()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_component(name: str) -> str:
    """A file-system-safe, collision-resistant directory name for a user key."""
    cleaned = _SAFE.sub("_", name)[:80] or "_"
    if cleaned != name:
        cleaned += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return cleaned


class StagingStore:
    """Messages of one user, by hash."""

    def __init__(self, root: Path, tenant: str, user_key: str) -> None:
        self.base = Path(root)
        self.root = self.base / safe_component(tenant) / safe_component(user_key)
        self._root = str(self.root)  # the hot paths join strings: pathlib cost a tenth
        self._made: set[str] = set()  # hash directories known to exist
        self._made_lock = threading.Lock()

    def path_for(self, sha256: str) -> Path:
        return Path(self._file(sha256))

    def _file(self, sha256: str) -> str:
        return f"{self._root}/{sha256[:2]}/{sha256}"

    def has(self, sha256: str) -> bool:
        return os.path.exists(self._file(sha256))

    def put(self, data: bytes) -> str:
        """Store ``data`` (once), durably, and return its hash (a batch of one)."""
        with self.batch() as batch:
            return batch.put(data)

    @contextmanager
    def batch(self) -> Iterator[StagingBatch]:
        """Write several messages, then make them durable together (see the module doc).

        On an exception nothing is synced: the files stay as an unreferenced cache (content
        addressed, so a retry reuses them and syncs them then).
        """
        batch = StagingBatch(self)
        yield batch
        batch.sync()

    def _write(self, data: bytes) -> tuple[str, str]:
        """Temp file + rename, no fsync; returns (hash, final path)."""
        digest = sha256_hex(data)
        directory = f"{self._root}/{digest[:2]}"
        final = f"{directory}/{digest}"
        if os.path.exists(final):
            return digest, final
        if directory not in self._made:
            private_dir(Path(directory))  # 0700 whatever the umask
            with self._made_lock:
                self._made.add(directory)
        tmp = f"{directory}/.tmp-{os.getpid()}-{next(_TMP_SEQ)}"
        try:  # 0600: the umask can only take bits away
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:  # the directory was removed since (a cleared stage)
            private_dir(Path(directory))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest, final

    def get(self, sha256: str, *, user: str | None = None) -> bytes:
        """Read a staged message and check it still matches its hash."""
        try:
            with open(self._file(sha256), "rb") as fh:
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


class StagingBatch:
    """The files of one batch; made durable by :meth:`sync` (called by ``StagingStore.batch``)."""

    def __init__(self, store: StagingStore) -> None:
        self.store = store
        self.files: set[str] = set()

    def put(self, data: bytes) -> str:
        """Write ``data`` (once) without fsync and return its hash; synced at the batch end."""
        digest, final = self.store._write(data)
        self.files.add(final)  # also when it existed: it may be an unsynced leftover
        return digest

    def sync(self) -> None:
        """fsync the files, then their directories and the ones above up to the staging root."""
        sync_batches([self])


def sync_batches(batches: Sequence[StagingBatch]) -> None:
    """Make the files of ``batches`` durable in one round: every file, then every directory
    that gained a name (the files' own and the ones above, up to the staging base)."""
    files = sorted({f for b in batches for f in b.files})
    if not files:
        return
    dirs = {os.path.dirname(f) for f in files}
    for store in {id(b.store): b.store for b in batches}.values():
        up = store.root
        while up != store.base.parent and up != up.parent:
            dirs.add(str(up))  # a directory created by this (or an unsynced) batch
            up = up.parent
    pool = _fsync_pool()
    # Data before names: list() waits for every file before any directory is synced.
    list(pool.map(_fsync, files))
    list(pool.map(_fsync, sorted(dirs)))
    for b in batches:
        b.files.clear()
