"""mbox destination: one mboxrd file per folder plus a sidecar index.

* Folder ``A/B`` is ``<root>/A.sbd/B.mbox`` (separator ``/``); each component is
  percent-encoded where a file name could not hold it (``%``, NUL, a leading ``.``).
* Each message is written as ``From MAILER-DAEMON <INTERNALDATE in UTC, asctime>``, then the
  message with mboxrd escaping (a line matching ``>*From `` gets one more ``>``), then a
  newline if the message did not end with one, then an empty line.
* Flags and INTERNALDATE are *not* written as ``Status:``/``X-Keywords:`` headers (that would
  change the bytes): they go to the sidecar ``<file>.mbox.index.jsonl``, one JSON object per
  message (``id``, ``start``, ``length`` of the escaped message, ``size`` and ``sha256`` of the
  original bytes, ``flags``, ``internaldate``, ``message_id``). Reading a message takes its
  span and reverses the escaping, which gives the original bytes back exactly.
* The mbox is fsynced before the index line is written. On opening a folder, bytes past the
  last indexed message (a crash between the two writes) are cut off and a torn last index line
  dropped, so a rerun is deterministic and never leaves a half message. Ids are 1, 2, 3… per
  file.
* A flag change rewrites the index (``set_flags``): written aside, fsynced, renamed over.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote

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
from scalix_migrate.message_identity import fingerprint_of, message_id_of

_ESCAPE = re.compile(rb"(?m)^(>*From )")
_UNESCAPE = re.compile(rb"(?m)^>(>*From )")
_SAFE = " !#$&'()+,;=@[]^_`{}~-"


def escape(body: bytes) -> bytes:
    return _ESCAPE.sub(rb">\1", body)


def unescape(data: bytes) -> bytes:
    return _UNESCAPE.sub(rb"\1", data)


def _component(name: str) -> str:
    encoded = quote(name, safe=_SAFE)
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


class MboxDestination:
    """One user's directory of mbox files."""

    def __init__(self, root: Path, *, user: str | None = None) -> None:
        self.root = Path(root)
        self.user = user
        self.layout = Layout(preset="mbox", separator="/", keywords_allowed=True)
        self._entries: dict[str, list[dict[str, Any]]] = {}

    def __enter__(self) -> MboxDestination:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create {self.root} ({exc.strerror})", code="SXM-DST-001", user=self.user
            ) from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entries.clear()

    def _path(self, folder: str) -> Path:
        parts = [_component(c) for c in folder.split("/")]
        return self.root.joinpath(*[p + ".sbd" for p in parts[:-1]], parts[-1] + ".mbox")

    @staticmethod
    def _index_path(path: Path) -> Path:
        return path.with_name(path.name + ".index.jsonl")

    def list_folders(self) -> list[str]:
        out = []
        for p in self.root.rglob("*.mbox"):
            rel = p.relative_to(self.root).parts
            comps = [unquote(c.removesuffix(".sbd")) for c in rel[:-1]]
            out.append("/".join([*comps, unquote(rel[-1].removesuffix(".mbox"))]))
        return sorted(out)

    def ensure_folder(self, folder: str) -> None:
        path = self._path(folder)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
            self._index_path(path).touch(exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create folder {folder!r} ({exc.strerror})",
                code="SXM-DST-007",
                user=self.user,
                folder=folder,
            ) from None

    def _load(self, folder: str) -> list[dict[str, Any]]:
        """The folder's index, after cutting off what a crash left unindexed."""
        if folder in self._entries:
            return self._entries[folder]
        path = self._path(folder)
        if not path.exists():
            self.ensure_folder(folder)
        entries: list[dict[str, Any]] = []
        index_path = self._index_path(path)
        lines = index_path.read_bytes().split(b"\n") if index_path.exists() else []
        good = b""
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:
                break  # a torn last line; everything after it is dropped too
            good += line + b"\n"
        if index_path.exists() and index_path.read_bytes() != good:
            index_path.write_bytes(good)
        end = entries[-1]["end"] if entries else 0
        if path.stat().st_size > end:
            with open(path, "r+b") as fh:
                fh.truncate(end)
        self._entries[folder] = entries
        return entries

    def append(
        self, folder: str, body: bytes, flags: frozenset[str], internaldate: datetime
    ) -> str:
        entries = self._load(folder)
        path = self._path(folder)
        stamp = internaldate.astimezone(UTC).strftime("%a %b %d %H:%M:%S %Y")
        escaped = escape(body)
        tail = b"" if escaped.endswith(b"\n") else b"\n"
        start_of_record = entries[-1]["end"] if entries else 0
        from_line = f"From MAILER-DAEMON {stamp}\n".encode("ascii")
        record = from_line + escaped + tail + b"\n"
        with open(path, "r+b") as fh:
            fh.seek(start_of_record)
            fh.write(record)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
        entry = {
            "id": str(len(entries) + 1),
            "start": start_of_record + len(from_line),
            "length": len(escaped),
            "end": start_of_record + len(record),
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "flags": sorted(flags),
            "internaldate": internaldate.isoformat(),
            "message_id": message_id_of(body),
            "fingerprint": fingerprint_of(body, len(body)),
        }
        with open(self._index_path(path), "ab") as fh:
            fh.write(json.dumps(entry, sort_keys=True).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        entries.append(entry)
        return str(entry["id"])

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
        """Change the flags in the sidecar index (the mbox itself is untouched); the index is
        rewritten to a temporary file, fsynced and renamed over the old one."""
        entries = self._load(folder)
        by_id = {str(e["id"]): e for e in entries}
        failed: dict[str, ItemError] = {}
        changed = False
        for ident, flags in flags_by_id.items():
            entry = by_id.get(ident)
            if entry is None:
                failed[ident] = not_there(ident, folder, self.user)
            elif entry["flags"] != sorted(flags):
                entry["flags"] = sorted(flags)
                changed = True
        if changed:
            self._rewrite_index(folder, entries)
        return failed

    def _rewrite_index(self, folder: str, entries: list[dict[str, Any]]) -> None:
        index_path = self._index_path(self._path(folder))
        tmp = index_path.with_name(index_path.name + ".tmp")
        with open(tmp, "wb") as fh:
            for e in entries:
                fh.write(json.dumps(e, sort_keys=True).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, index_path)
        dir_fd = os.open(index_path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def find(
        self,
        folder: str,
        *,
        message_id: str | None,
        size: int,
        fingerprint: str,
        exclude: Collection[str] = (),
    ) -> str | None:
        for e in self._load(folder):
            if e["id"] in exclude or e["size"] != size:
                continue
            if (message_id is not None and e["message_id"] == message_id) or (
                message_id is None and e["fingerprint"] == fingerprint
            ):
                return str(e["id"])
        return None

    def folder_state(self, folder: str) -> str | None:
        # The file can be rewritten in place (mboxrd): every verify reads it.
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
        # An mbox file can be rewritten in place: nothing is taken as proven (no generation).
        del proven
        entries = self._load(folder)
        wanted = None if ids is None else set(ids)
        with open(self._path(folder), "rb") as fh:
            for e in entries:
                if wanted is not None and str(e["id"]) not in wanted:
                    continue
                fh.seek(e["start"])
                data = unescape(fh.read(e["length"]))
                yield DestinationMessage(
                    id=str(e["id"]),
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    flags=frozenset(e["flags"]),
                    internaldate=datetime.fromisoformat(e["internaldate"]),
                    message_id=e["message_id"],
                )
