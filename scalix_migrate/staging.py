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
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from scalix_migrate.errors import UserError
from scalix_migrate.private import private_dir

_SAFE = re.compile(r"[^A-Za-z0-9@._+-]")
#: concurrent fsyncs at the end of a batch (bounded: the machine's disks are shared)
FSYNC_THREADS = 8


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

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

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

    def _write(self, data: bytes) -> tuple[str, Path]:
        """Temp file + rename, no fsync; returns (hash, final path)."""
        digest = sha256_hex(data)
        final = self.path_for(digest)
        if final.exists():
            return digest, final
        private_dir(final.parent)  # mkstemp's files are 0600 already
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
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
            data = self.path_for(sha256).read_bytes()
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagingBatch:
    """The files of one batch; made durable by :meth:`sync` (called by ``StagingStore.batch``)."""

    def __init__(self, store: StagingStore) -> None:
        self.store = store
        self.files: set[Path] = set()

    def put(self, data: bytes) -> str:
        """Write ``data`` (once) without fsync and return its hash; synced at the batch end."""
        digest, final = self.store._write(data)
        self.files.add(final)  # also when it existed: it may be an unsynced leftover
        return digest

    def sync(self) -> None:
        """fsync the files, then their directories and the ones above up to the staging root."""
        if not self.files:
            return
        dirs = {f.parent for f in self.files}
        up = self.store.root
        while up != self.store.base.parent and up != up.parent:
            dirs.add(up)  # a directory created by this (or an unsynced) batch
            up = up.parent
        workers = min(FSYNC_THREADS, len(self.files))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sxm-fsync") as pool:
            # Data before names: list() waits for every file before any directory is synced.
            list(pool.map(_fsync, sorted(self.files)))
            list(pool.map(_fsync, sorted(dirs)))
        self.files.clear()
