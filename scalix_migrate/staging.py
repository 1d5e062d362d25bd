"""Content-addressed message store: ``<root>/<tenant>/<user>/<aa>/<sha256>``.

A message is stored once per user by the SHA-256 of its bytes, written to a temp file and
renamed into place, so a crash never leaves a half-written message under its final name. The
store decouples the source from a slow destination: load can be retried, and Scalix switched
off, once extraction is complete. It is a cache: the journal is the truth.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from scalix_migrate.errors import UserError

_SAFE = re.compile(r"[^A-Za-z0-9@._+-]")


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
        self.root = Path(root) / safe_component(tenant) / safe_component(user_key)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its hash."""
        digest = sha256_hex(data)
        final = self.path_for(digest)
        if final.exists():
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

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
