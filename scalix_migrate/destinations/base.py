"""The destination protocol every sink implements, and what they share.

A :class:`Destination` is a context manager over one user's destination mailbox. Folder names
crossing this protocol are *destination* names: Unicode, joined with the destination's own
``layout.separator`` (the mapping from Scalix names is :mod:`scalix_migrate.folders`' job).
Message bytes cross it untouched. A sink returns a stable id for each message it stores (the
IMAP UID, the Maildir base name, the mbox index id) so the ledger can record it.

Identity used for reconciliation after a crash (see :mod:`scalix_migrate.load`): the
Message-ID plus the size, or, for a message without a Message-ID, a *fingerprint*: the SHA-256
of the unfolded Date, From, Subject and To header values plus the size.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import ConfigError, ItemError
from scalix_migrate.records import ScalixUser


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
        self, folder: str, *, proven: Proven | None = None
    ) -> Iterator[DestinationMessage]:
        """Every message of ``folder`` with its size, hash where kept, flags, date and the
        folder's generation. The bytes of ``proven`` ids may be left unread (``sha256`` and
        ``message_id`` None) when the folder's generation is still ``proven.generation``."""
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


# --- message identity -----------------------------------------------------------------

_HEADER_END = re.compile(rb"\r?\n\r?\n")
FINGERPRINT_HEADERS = ("date", "from", "subject", "to")


def header_block(body: bytes) -> bytes:
    """The header section of a message (up to the first empty line)."""
    m = _HEADER_END.search(body)
    return body[: m.start()] if m else body


def header_values(block: bytes) -> dict[str, list[bytes]]:
    """Unfolded header values by lower-cased name, in order, whitespace collapsed."""
    out: dict[str, list[bytes]] = {}
    current: list[bytes] | None = None
    for raw in re.split(rb"\r?\n", block):
        if raw[:1] in (b" ", b"\t") and current is not None:
            current[-1] += b" " + raw.strip()
            continue
        name, sep, value = raw.partition(b":")
        if not sep or not name or b" " in name.strip():
            current = None
            continue
        current = out.setdefault(name.strip().decode("ascii", "replace").lower(), [])
        current.append(value.strip())
    return {k: [b" ".join(v.split()) for v in vs] for k, vs in out.items()}


# A Message-ID header line and its continuation lines, as header_values() reads them (a name
# without blanks inside, blanks allowed before the colon; a line starting with a blank continues).
_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def message_id_of(body: bytes) -> str | None:
    """The first Message-ID header value, or None (also when it is empty).

    The same value as ``header_values(header_block(body))["message-id"][0]`` (unfolded,
    blanks collapsed), found with one regular expression instead of parsing every header
    line: verify asks it of every message it reads back."""
    m = _MESSAGE_ID.search(header_block(body))
    if m is None:
        return None
    text = b" ".join(m.group(1).split()).decode("utf-8", "replace").strip()
    return text or None


def fingerprint_of(headers: bytes, size: int) -> str:
    """SHA-256 over Date, From, Subject, To (unfolded) and the size. ``headers`` may be the
    whole message or just its header block."""
    values = header_values(header_block(headers))
    h = hashlib.sha256()
    for name in FINGERPRINT_HEADERS:
        h.update(name.encode() + b"\0" + b"\0".join(values.get(name, [])) + b"\n")
    h.update(str(size).encode())
    return h.hexdigest()


# --- choosing a destination -------------------------------------------------------------


def user_placeholders(cfg: TenantConfig, user: ScalixUser) -> dict[str, str]:
    """The values of ``{email} {local_part} {domain} {auth_id} {display_name} {tenant}``."""
    email = user.primary_address or user.key
    local, _, domain = email.partition("@")
    return {
        "email": email,
        "local_part": local,
        "domain": domain,
        "auth_id": user.auth_id or local,
        "display_name": user.display_name,
        "tenant": cfg.tenant,
    }


def render_template(template: str, cfg: TenantConfig, user: ScalixUser) -> str:
    """Fill a per-user template; an unknown placeholder is a config error."""
    values = user_placeholders(cfg, user)
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"template {template!r} uses an unknown placeholder ({exc}); "
            f"known: {', '.join('{' + k + '}' for k in values)}"
        ) from None


def open_destination(cfg: TenantConfig, user: ScalixUser) -> Destination:
    """The sink ``cfg.destination.type`` names, for ``user`` (not yet entered)."""
    dest = cfg.destination
    if dest.type == "imap":
        from scalix_migrate.destinations.imap import ImapDestination

        imap_dest: Destination = ImapDestination(dest, cfg, user)
        return imap_dest
    if dest.type == "maildir":
        from scalix_migrate.destinations.maildir import MaildirDestination

        return MaildirDestination(Path(render_template(dest.path, cfg, user)), user=user.key)
    from scalix_migrate.destinations.mbox import MboxDestination

    return MboxDestination(Path(render_template(dest.path, cfg, user)), user=user.key)
