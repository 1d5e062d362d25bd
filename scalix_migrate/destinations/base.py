"""The destination protocol every sink implements, and what they share.

A :class:`Destination` is a context manager over one user's destination mailbox. Folder names
crossing this protocol are *destination* names: Unicode, joined with the destination's own
``layout.separator`` (the mapping from Scalix names is :mod:`scalix_migrate.folders`' job).
Message bytes cross it untouched. A sink returns a stable id for each message it stores (the
IMAP UID, the Maildir base name, the mbox index id) so the ledger can record it.

Identity used for reconciliation after a crash (see :mod:`scalix_migrate.load`): the
Message-ID plus the size, or, for a message without a Message-ID, a *fingerprint*; both are
:mod:`scalix_migrate.message_identity`'s, the same for extract and every sink.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol, runtime_checkable

from scalix_migrate.errors import ItemError


@dataclass(frozen=True)
class DestinationMessage:
    """One message as the destination holds it (for verification and reconciliation)."""

    id: str
    size: int
    sha256: str | None  # None where the destination does not give the bytes back
    flags: frozenset[str]
    internaldate: datetime | None  # aware
    message_id: str | None
    # The folder's generation when it was read (IMAP: UIDVALIDITY; None: the sink has none).
    generation: str | None = None


@dataclass(frozen=True)
class Proven:
    """Messages whose bytes verify already proved at the destination, in one folder
    generation: a sink may list them without reading their bytes again (``sha256`` None),
    as long as the folder still has that generation (an id then still names the same,
    immutable message)."""

    generation: str
    ids: frozenset[str]


@dataclass(frozen=True)
class FolderDelta:
    """What changed in a folder between two of its states when every message of the earlier
    one is still there (:meth:`Destination.changes`): the ids added since, the ids among the
    earlier messages whose flags changed, and how many earlier messages there are."""

    added: frozenset[str]
    flags_changed: frozenset[str]
    kept: int


@dataclass(frozen=True)
class AppendItem:
    """One message to append: bytes untouched, flags already mapped, an aware date."""

    body: bytes
    flags: frozenset[str]
    internaldate: datetime


@dataclass(frozen=True)
class Layout:
    """What the folder mapping needs to know about a destination."""

    preset: str  # generic | dovecot | gmail | m365 | maildir | mbox
    separator: str
    prefix: str = ""  # personal namespace prefix, e.g. "INBOX." on Cyrus
    special_use: dict[str, str] = field(default_factory=dict)  # "\\Sent" -> folder name
    keywords_allowed: bool = True
    max_message_size: int | None = None
    case_insensitive: bool = False


#: One result per appended item: the destination id (None when the server does not say),
#: or the ItemError that rejected that item.
AppendResult = str | None | ItemError


@runtime_checkable
class Destination(Protocol):
    """One user's destination mailbox. All methods may raise TransientError/UserError."""

    layout: Layout

    def __enter__(self) -> Destination: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def list_folders(self) -> list[str]:
        """Every selectable folder, destination names."""
        ...

    def ensure_folder(self, folder: str) -> None:
        """Create ``folder`` (and its parents) unless it exists."""
        ...

    def append(
        self, folder: str, body: bytes, flags: frozenset[str], internaldate: datetime
    ) -> str | None:
        """Store one message; return its destination id. ItemError if it is rejected."""
        ...

    def append_many(self, folder: str, items: Sequence[AppendItem]) -> list[AppendResult]:
        """Store several messages (one round trip where the destination allows)."""
        ...

    def find(
        self,
        folder: str,
        *,
        message_id: str | None,
        size: int,
        fingerprint: str,
        exclude: Collection[str] = (),
    ) -> str | None:
        """The id of a message matching this identity, not in ``exclude``, or None."""
        ...

    def messages(
        self,
        folder: str,
        *,
        proven: Proven | None = None,
        ids: Collection[str] | None = None,
    ) -> Iterator[DestinationMessage]:
        """Every message of ``folder`` (with ``ids``: those of them that exist) with its size,
        hash where kept, flags, date and the folder's generation. The bytes of ``proven`` ids
        may be left unread (``sha256`` and ``message_id`` None) when the folder's generation
        is still ``proven.generation``."""
        ...

    def folder_state(self, folder: str) -> str | None:
        """A token that changes whenever anything verify compares in ``folder`` changes (a
        message added or removed, flags changed), or None where the sink cannot promise that
        (verify then lists the folder). IMAP with CONDSTORE: UIDVALIDITY, UIDNEXT, MESSAGES
        and HIGHESTMODSEQ (RFC 7162: every flag change and expunge raises HIGHESTMODSEQ)."""
        ...

    def changes(self, folder: str, since: str, now: str) -> FolderDelta | None:
        """What changed in ``folder`` from its state ``since`` to its state ``now`` (two
        :meth:`folder_state` tokens), or None when the sink cannot tell exactly: a message of
        ``since`` is gone, the generation is another, or the sink keeps no such history.
        Verify then lists the whole folder."""
        ...

    def settle(self, folders: Collection[str]) -> None:
        """Return once no message is still arriving in ``folders``: before reconciling after a
        lost connection, whose last APPEND a server may store a moment after the client has
        gone (bounded; a no-op for the local sinks, whose writers end with their process)."""
        ...

    def set_flags(
        self, folder: str, flags_by_id: Mapping[str, frozenset[str]]
    ) -> dict[str, ItemError]:
        """Replace the flags of the messages named by destination id with the given (already
        mapped) flags. Returns the ids that could not be updated, with the reason (SXM-DST-008
        when the message is no longer there); every other id is done."""
        ...


def not_there(ident: str, folder: str, user: str | None) -> ItemError:
    """The error of a flag update whose message the destination no longer holds."""
    return ItemError(
        f"message {ident} is no longer in the destination folder; its flags were not updated",
        code="SXM-DST-008",
        user=user,
        folder=folder,
    )
