"""Frozen records that cross module boundaries.

Adapters normalise server replies into these at the boundary: UIDs are ints, flags a frozenset
of str, dates aware datetimes, folder names decoded once (``/``-separated, Unicode). No raw
``b"BODY[]"`` keys or mixed str/bytes travel past an adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True)
class ScalixUser:
    """One user as discovered through the admin commands."""

    display_name: str
    mailnode: str
    auth_id: str | None = None
    addresses: tuple[str, ...] = ()  # in Scalix's order: the first is the primary address
    user_class: str | None = None  # "Full" (premium) or "Limited" (standard)
    locked: bool | None = None
    has_message_store: bool | None = None
    mailbox_kib: int | None = None
    store_limit_kib: int | None = None
    full_admin: bool | None = None
    capabilities: frozenset[str] = frozenset()
    details: Mapping[str, str] = field(default_factory=dict)  # every parsed key, as printed

    @property
    def name(self) -> str:
        """Scalix's own name for the user: ``Display Name/mailnode``."""
        return f"{self.display_name}/{self.mailnode}"

    @property
    def primary_address(self) -> str | None:
        return self.addresses[0] if self.addresses else None

    @property
    def key(self) -> str:
        """The user's key in the journal and in ``users=[…]``: the primary address, lowercased."""
        return (self.primary_address or self.name).lower()


class SpecialFolder(StrEnum):
    """Scalix's ``\\X-SpecialFolder=`` values (and RFC 6154 roles mapped onto them)."""

    inbox = "Inbox"
    outbox = "Outbox"
    sent = "SentItems"
    deleted = "DeletedItems"
    drafts = "Drafts"
    junk = "Junk"
    calendar = "Calendar"
    contacts = "Contacts"
    tasks = "Tasks"
    notes = "Notes"
    journal = "Journal"
    recovery = "Recovery"


class ItemClass(StrEnum):
    mail = "mail"
    appointment = "appointment"
    contact = "contact"
    task = "task"
    note = "note"
    journal = "journal"


@dataclass(frozen=True)
class SourceFolder:
    """A folder as listed by the source, decoded."""

    name: str  # Unicode, "/"-separated, e.g. "INBOX/Projekte/Größe"
    raw_name: str  # as on the wire (modified UTF-7)
    delimiter: str
    attributes: frozenset[str]
    special: SpecialFolder | None = None
    folder_class: str | None = None  # IPF.Note, IPF.Appointment, IPF.Contact, …
    selectable: bool = True


@dataclass(frozen=True)
class FetchedMessage:
    """One message as read from the source (or staged): bytes untouched."""

    uid: int
    flags: frozenset[str]
    internaldate: datetime  # aware
    size: int
    body: bytes


@dataclass(frozen=True)
class FolderCursor:
    """How far a folder has been extracted. Valid only for its UIDVALIDITY."""

    folder: str
    uidvalidity: int
    highest_uid: int
    # The source HIGHESTMODSEQ journalled when the folder was last read through (CONDSTORE),
    # under this UIDVALIDITY; None when never recorded.
    modseq: int | None = None


class LoadState(StrEnum):
    staged = "staged"  # extracted, not yet written to the destination
    appending = "appending"  # an APPEND was started: reconcile before appending again
    loaded = "loaded"  # the destination has it (dest_uid recorded where the server says)
    skipped = "skipped"  # deliberately not loaded (\Deleted, filtered, over-size)
    failed = "failed"  # an item error; recorded with its code
    superseded = "superseded"  # an old-UIDVALIDITY row replaced by its re-planned twin


@dataclass(frozen=True, slots=True)  # slots: a verify holds a folder's worth of these
class LedgerEntry:
    """One source message in the journal, keyed by (folder, UIDVALIDITY, UID)."""

    folder: str
    uidvalidity: int
    uid: int
    sha256: str
    size: int
    internaldate: datetime
    flags: frozenset[str]
    message_id: str | None
    item_class: ItemClass = ItemClass.mail
    load_state: LoadState = LoadState.staged
    dest_folder: str | None = None
    dest_uid: str | None = None
    id: int | None = None  # journal row id, once stored
    # The destination folder's generation (IMAP: UIDVALIDITY) at which verify last proved
    # this row's bytes there; None until then (see scalix_migrate.verify).
    verified_gen: str | None = None
