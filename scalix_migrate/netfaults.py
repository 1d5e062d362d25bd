"""What happened on the wire, told apart so each case gets its own code and remedy.

:func:`classify` turns a network exception (socket, TLS, imaplib/imapclient abort, EOF) into a
:class:`NetFault`: *refused* / *unreachable* (nothing answered: the address, the port or a
firewall), *timeout* (a working connection stopped answering), *lost* (reset, EOF or BYE in the
middle of a session), *tls* (the handshake failed: usually the TLS mode does not match the port),
*tls-verify* (the certificate is not trusted). The adapters pick the code for their peer from
the kind with :func:`source_code` / :func:`destination_code`; :func:`describe` gives a text for
the operator without Python reprs (no ``b'...'``, no ``[b'...']``).
"""

from __future__ import annotations

import contextvars
import errno
import imaplib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from imapclient import exceptions as imap_exc

Kind = Literal["refused", "unreachable", "timeout", "lost", "tls", "tls-verify", "other"]

_REFUSED = {errno.ECONNREFUSED}
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
_LOST = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ESHUTDOWN}


@dataclass(frozen=True)
class NetFault:
    kind: Kind
    detail: str  # what the exception said, without reprs


def classify(exc: BaseException, *, connecting: bool = False) -> NetFault:
    """The kind of ``exc``; ``connecting`` says it came before the session was up (a timeout
    then means nothing answered, not that a working server went quiet)."""
    detail = plain_text(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return NetFault("tls-verify", getattr(exc, "verify_message", None) or detail)
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
        return NetFault("tls", detail)
    if isinstance(exc, socket.timeout | TimeoutError) or "timed out" in detail.lower():
        return NetFault("unreachable" if connecting else "timeout", detail)
    if isinstance(exc, socket.gaierror):
        return NetFault("unreachable", detail)
    number = getattr(exc, "errno", None)
    if number in _REFUSED:
        return NetFault("refused", detail)
    if number in _UNREACHABLE:
        return NetFault("unreachable", detail)
    if number in _LOST or isinstance(exc, ConnectionError | EOFError | ssl.SSLEOFError):
        return NetFault("lost", detail)
    if isinstance(exc, imaplib.IMAP4.abort | imap_exc.IMAPClientAbortError):
        # imaplib reports a peer that went away as abort("socket error: EOF") and a BYE the
        # same way; a session that was up and is gone is "lost" either way.
        return NetFault("unreachable" if connecting else "lost", detail)
    return NetFault("other", detail)


def plain_text(exc: BaseException) -> str:
    """``exc``'s message for an operator: its class when it says nothing, bytes decoded."""
    parts = []
    for arg in exc.args:
        if isinstance(arg, bytes):
            parts.append(arg.decode("utf-8", "replace"))
        elif isinstance(arg, list | tuple):
            parts.append(" ".join(server_text(arg)))
        else:
            parts.append(str(arg))
    text = " ".join(p for p in parts if p).strip()
    return text or type(exc).__name__


def server_text(data: object) -> list[str]:
    """A server's response lines (imaplib hands them as lists of bytes) as plain strings."""
    if isinstance(data, bytes):
        return [data.decode("utf-8", "replace")]
    if isinstance(data, str):
        return [data]
    if isinstance(data, list | tuple):
        return [t for item in data for t in server_text(item)]
    return [] if data is None else [str(data)]


_SOURCE_CODES: dict[Kind, str] = {
    "refused": "SXM-IMAP-001",
    "unreachable": "SXM-IMAP-001",
    "timeout": "SXM-IMAP-008",
    "lost": "SXM-IMAP-007",
    "tls": "SXM-IMAP-009",
    "tls-verify": "SXM-IMAP-003",
    "other": "SXM-IMAP-007",
}
_DEST_CODES: dict[Kind, str] = {
    "refused": "SXM-DST-001",
    "unreachable": "SXM-DST-001",
    "timeout": "SXM-DST-010",
    "lost": "SXM-DST-009",
    "tls": "SXM-DST-011",
    "tls-verify": "SXM-DST-011",
    "other": "SXM-DST-009",
}


def source_code(fault: NetFault) -> str:
    return _SOURCE_CODES[fault.kind]


def destination_code(fault: NetFault) -> str:
    return _DEST_CODES[fault.kind]


def describe(fault: NetFault, where: str) -> str:
    """A one-line account of what happened at ``where`` (host:port), for error messages."""
    what = {
        "refused": "refused the connection",
        "unreachable": "could not be reached",
        "timeout": "stopped answering (read timed out)",
        "lost": "dropped the connection",
        "tls": "failed the TLS handshake",
        "tls-verify": "presented a certificate that is not trusted",
        "other": "failed",
    }[fault.kind]
    return f"{where} {what}: {fault.detail}"


@dataclass
class FaultTally:
    """Connections lost and reopened while one user step ran (see :func:`counting`)."""

    reconnects: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self) -> None:
        with self._lock:
            self.reconnects += 1


# A context variable, not a global: each user step (a Prefect task thread) counts its own;
# worker threads a step starts run in a copy of its context (contextvars.copy_context).
_TALLY: contextvars.ContextVar[FaultTally | None] = contextvars.ContextVar(
    "sxm_fault_tally", default=None
)


@contextmanager
def counting() -> Iterator[FaultTally]:
    """Count the reconnects :func:`note_reconnect` reports inside the block."""
    tally = FaultTally()
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)


def note_reconnect() -> None:
    """An adapter reopened a connection that was lost (counted for the running user step)."""
    tally = _TALLY.get()
    if tally is not None:
        tally.add()
