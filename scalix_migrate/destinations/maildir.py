"""Maildir++ destination (the layout Dovecot and Courier read).

* ``<root>/{cur,new,tmp}`` is INBOX; folder ``A.B`` is ``<root>/.A.B/`` (separator ``.``), each
  component in IMAP modified UTF-7 on disk as Dovecot does, with a ``maildirfolder`` marker.
* A message is written to ``tmp/``, fsynced, its mtime set to INTERNALDATE, then hard-linked
  into ``cur/`` (a link never replaces an existing file) and the tmp name removed: a reader
  never sees half a message, and a crash leaves at most a stray file in ``tmp/``.
* File name: ``<epoch>.<sha256[:16]>_<n>.sxm,S=<size>:2,<info>``; ``n`` is the smallest number
  not yet used in the folder, so names are deterministic and unique. The id reported to the
  ledger is the part before ``:2,``.
* Flags: ``D`` \\Draft, ``F`` \\Flagged, ``R`` \\Answered, ``S`` \\Seen, ``T`` \\Deleted;
  keywords as letters ``a``–``z`` listed in the folder's ``dovecot-keywords`` file
  (Dovecot's format, ``<index> <keyword>`` per line). A 27th keyword in one folder is an item error.
* Bytes are written untouched (line endings included).
* A flag change renames the file (``set_flags``); its id stays the part before ``:2,``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from imapclient import imap_utf7

from scalix_migrate.destinations.base import (
    AppendItem,
    AppendResult,
    DestinationMessage,
    FolderDelta,
    Layout,
    Proven,
    not_there,
)
from scalix_migrate.errors import ItemError, UserError
from scalix_migrate.message_identity import fingerprint_of, header_block, message_id_of

_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
_FLAGS = {v: k for k, v in _LETTERS.items()}
_NAME = re.compile(
    r"^(?P<id>(?P<epoch>\d+)\.[0-9a-f]{16}_(?P<n>\d+)\.sxm,S=(?P<size>\d+))"
    r"(?::2,(?P<info>[A-Za-z]*))?$"
)
_FOREIGN_SIZE = re.compile(r",S=(\d+)")
MAX_KEYWORDS = 26


class MaildirDestination:
    """One user's Maildir++ tree at ``root``."""

    def __init__(self, root: Path, *, user: str | None = None) -> None:
        self.root = Path(root)
        self.user = user
        self.layout = Layout(preset="maildir", separator=".", keywords_allowed=True)
        self._index: dict[str, dict[str, Path]] = {}

    def __enter__(self) -> MaildirDestination:
        try:
            self._make(self.root)
        except OSError as exc:
            raise UserError(
                f"cannot create the Maildir {self.root} ({exc.strerror})",
                code="SXM-DST-001",
                user=self.user,
            ) from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._index.clear()

    # --- folders -------------------------------------------------------------------------

    def _dir(self, folder: str) -> Path:
        if folder == "INBOX":
            return self.root
        encoded = ".".join(imap_utf7.encode(c).decode("ascii") for c in folder.split("."))
        return self.root / f".{encoded}"

    @staticmethod
    def _make(path: Path) -> None:
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    def list_folders(self) -> list[str]:
        names = ["INBOX"]
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") and (child / "cur").is_dir():
                raw = child.name[1:].split(".")
                names.append(".".join(imap_utf7.decode(c.encode("ascii")) for c in raw))
        return names

    def ensure_folder(self, folder: str) -> None:
        path = self._dir(folder)
        try:
            self._make(path)
            if path != self.root:
                (path / "maildirfolder").touch()
        except OSError as exc:
            raise UserError(
                f"cannot create folder {folder!r} ({exc.strerror})",
                code="SXM-DST-007",
                user=self.user,
                folder=folder,
            ) from None

    # --- keywords ------------------------------------------------------------------------

    def _keywords(self, folder: str) -> list[str]:
        path = self._dir(folder) / "dovecot-keywords"
        if not path.exists():
            return []
        found: dict[int, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            idx, _, name = line.partition(" ")
            if idx.isdigit() and name:
                found[int(idx)] = name
        return [found[i] for i in sorted(found)]

    def _write_keywords(self, folder: str, keywords: list[str]) -> None:
        path = self._dir(folder) / "dovecot-keywords"
        tmp = path.with_name(".dovecot-keywords.tmp")
        tmp.write_text("".join(f"{i} {k}\n" for i, k in enumerate(keywords)), encoding="utf-8")
        os.replace(tmp, path)

    def _info(self, folder: str, flags: frozenset[str]) -> str:
        letters = sorted(_LETTERS[f] for f in flags if f in _LETTERS)
        keywords = sorted(f for f in flags if not f.startswith("\\"))
        if keywords:
            known = self._keywords(folder)
            new = [k for k in keywords if k not in known]
            if len(known) + len(new) > MAX_KEYWORDS:
                raise ItemError(
                    f"Maildir holds at most {MAX_KEYWORDS} keywords per folder",
                    code="SXM-DST-004",
                    user=self.user,
                    folder=folder,
                )
            if new:
                known = known + new
                self._write_keywords(folder, known)
            letters += sorted(chr(ord("a") + known.index(k)) for k in keywords)
        return "".join(letters)

    # --- messages ------------------------------------------------------------------------

    def _files(self, folder: str) -> dict[str, Path]:
        if folder not in self._index:
            index: dict[str, Path] = {}
            base = self._dir(folder)
            for sub in ("new", "cur"):
                d = base / sub
                if d.is_dir():
                    for p in d.iterdir():
                        index[p.name.split(":2,")[0]] = p
            self._index[folder] = index
        return self._index[folder]

    def append(
        self, folder: str, body: bytes, flags: frozenset[str], internaldate: datetime
    ) -> str:
        base = self._dir(folder)
        if not (base / "cur").is_dir():
            self.ensure_folder(folder)
        info = self._info(folder, flags)
        epoch = int(internaldate.timestamp())
        digest = hashlib.sha256(body).hexdigest()[:16]
        files = self._files(folder)
        tmp = base / "tmp" / f"{epoch}.{digest}.{os.getpid()}.sxm"
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.utime(tmp, (epoch, epoch))
        try:
            n = 1
            while True:
                ident = f"{epoch}.{digest}_{n}.sxm,S={len(body)}"
                if ident not in files:
                    target = base / "cur" / f"{ident}:2,{info}"
                    try:
                        os.link(tmp, target)
                        break
                    except FileExistsError:
                        pass
                n += 1
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(base / "cur", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        files[ident] = target
        return ident

    def append_many(self, folder: str, items: Sequence[AppendItem]) -> list[AppendResult]:
        out: list[AppendResult] = []
        for item in items:
            try:
                out.append(self.append(folder, item.body, item.flags, item.internaldate))
            except ItemError as exc:
                out.append(exc)
        return out

    def set_flags(
        self, folder: str, flags_by_id: Mapping[str, frozenset[str]]
    ) -> dict[str, ItemError]:
        """Rename each message to ``cur/<id>:2,<new info>`` (a rename is atomic; a message in
        ``new/`` moves to ``cur/`` as a reader that changed its flags would move it)."""
        files = self._files(folder)
        failed: dict[str, ItemError] = {}
        for ident, flags in flags_by_id.items():
            path = files.get(ident)
            if path is None:
                failed[ident] = not_there(ident, folder, self.user)
                continue
            try:
                target = self._dir(folder) / "cur" / f"{ident}:2,{self._info(folder, flags)}"
            except ItemError as exc:  # a 27th keyword
                failed[ident] = exc
                continue
            if target == path:
                continue
            try:
                os.rename(path, target)
            except FileNotFoundError:  # removed (or renamed by a reader) meanwhile
                files.pop(ident, None)
                failed[ident] = not_there(ident, folder, self.user)
                continue
            files[ident] = target
        return failed

    def _size(self, ident: str, path: Path) -> int:
        m = _FOREIGN_SIZE.search(ident)
        return int(m.group(1)) if m else path.stat().st_size

    def find(
        self,
        folder: str,
        *,
        message_id: str | None,
        size: int,
        fingerprint: str,
        exclude: Collection[str] = (),
    ) -> str | None:
        for ident, path in sorted(self._files(folder).items()):
            if ident in exclude or self._size(ident, path) != size:
                continue
            with open(path, "rb") as fh:
                head = header_block(fh.read(min(size, 256 * 1024)))
            if message_id is not None:
                if message_id_of(head) == message_id:
                    return ident
            elif fingerprint_of(head, size) == fingerprint:
                return ident
        return None

    def folder_state(self, folder: str) -> str | None:
        # A file's mtime (its INTERNALDATE) can change without its directory changing: no
        # token the listing could trust; listing a local folder is cheap.
        return None

    def changes(self, folder: str, since: str, now: str) -> FolderDelta | None:
        del folder, since, now  # no folder state, so never asked
        return None

    def settle(self, folders: Collection[str]) -> None:
        del folders  # written by this process only: nothing can still be arriving

    def messages(
        self,
        folder: str,
        *,
        proven: Proven | None = None,
        ids: Collection[str] | None = None,
    ) -> Iterator[DestinationMessage]:
        keywords = self._keywords(folder)
        # A Maildir file is never rewritten under its unique name; the folder directory's
        # identity tells a folder deleted and made again apart.
        base = self._dir(folder).stat()
        generation = f"{base.st_dev}:{base.st_ino}"
        skip = proven.ids if proven is not None and proven.generation == generation else ()
        wanted = None if ids is None else set(ids)
        for ident, path in sorted(self._files(folder).items()):
            if wanted is not None and ident not in wanted:
                continue
            data = None if ident in skip else path.read_bytes()
            info = path.name.split(":2,")[1] if ":2," in path.name else ""
            flags = {_FLAGS[c] for c in info if c in _FLAGS}
            flags |= {
                keywords[ord(c) - 97] for c in info if c.islower() and ord(c) - 97 < len(keywords)
            }
            stat = path.stat()
            yield DestinationMessage(
                id=ident,
                size=len(data) if data is not None else stat.st_size,
                sha256=hashlib.sha256(data).hexdigest() if data is not None else None,
                flags=frozenset(flags),
                internaldate=datetime.fromtimestamp(int(stat.st_mtime), UTC),
                message_id=message_id_of(data) if data is not None else None,
                generation=generation,
            )
