"""Records the journal's queries return: one frozen dataclass per kind of row.

Callers outside ``state/`` see these, never SQLAlchemy rows or dicts keyed by column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from scalix_migrate.records import SpecialFolder
from scalix_migrate.state.schema import _aware


@dataclass(frozen=True)
class FolderRow:
    """A source folder as the journal knows it: its cursor and its destination name."""

    tenant: str
    user_key: str
    folder: str
    uidvalidity: int
    highest_uid: int  # every UID up to here is in the ledger (for this UIDVALIDITY)
    special: SpecialFolder | None
    folder_class: str | None
    dest_folder: str | None  # None until load planned the folder
    source_count: int | None
    replans: int  # how often a UIDVALIDITY change re-planned it
    updated_at: datetime | None
    modseq: int | None  # the source HIGHESTMODSEQ when last read through


def folder_row(m: Any) -> FolderRow:
    """A ``folders`` row mapping as its record."""
    return FolderRow(
        tenant=m["tenant"],
        user_key=m["user_key"],
        folder=m["folder"],
        uidvalidity=int(m["uidvalidity"]),
        highest_uid=int(m["highest_uid"]),
        special=SpecialFolder(m["special"]) if m["special"] else None,
        folder_class=m["folder_class"],
        dest_folder=m["dest_folder"],
        source_count=None if m["source_count"] is None else int(m["source_count"]),
        replans=int(m["replans"]),
        updated_at=_aware(m["updated_at"]),
        modseq=int(m["modseq"]) if m["modseq"] else None,
    )


@dataclass(frozen=True)
class ItemProblem:
    """A ledger row that did not arrive: ``failed``, or ``skipped`` with an error code."""

    user_key: str
    folder: str
    uidvalidity: int
    uid: int
    size: int
    message_id: str | None
    error_code: str | None
    error_detail: str | None


@dataclass(frozen=True)
class ServiceChange:
    """A change restart-service made on the Scalix server, and the command that undoes it."""

    id: int
    tenant: str
    kind: str  # "service-stopped", "account-locked"
    target: str
    undo_command: str
    done_at: datetime
    undone_at: datetime | None


@dataclass(frozen=True)
class CommandRecord:
    """One remote command line run on the Scalix server, as logged."""

    id: int
    tenant: str
    at: datetime
    host: str | None
    command: str
    exit_status: int | None
    duration_s: float | None


@dataclass(frozen=True)
class FolderSeal:
    """A destination folder verify compared and found equal to the ledger: the destination's
    state token then, and the digest of the ledger rows compared (verify.py)."""

    dest_state: str
    rows_digest: str


class SealRow(NamedTuple):
    """One loaded ledger row as a folder seal digests it (verify.py), read without building
    a LedgerEntry: a rerun's verify reads these for every row and entries only for folders
    whose seal no longer holds."""

    id: int
    dest_uid: str | None
    sha256: str
    size: int
    flags: frozenset[str]
    internaldate_s: int  # INTERNALDATE, whole seconds since the epoch
    proven: bool  # verified_gen is set: the bytes were read back once
    sig: str | None = None  # verified_sig: what its folder's last seal found equal
