"""One way to open and log in to an IMAP connection, for the source and every IMAP destination.

:func:`connect` opens a connection to an :class:`Endpoint`: explicit connect and read timeouts;
TLS as configured (implicit, STARTTLS or none), the CA store loaded only for a TLS connection
(it costs ~70-100 ms); ``TCP_NODELAY``; no DEBUG trace of the LOGIN line or of mail; dates
kept with their zone. It raises what the network raised (``OSError`` and its ``ssl``
subclasses, ``EOFError``, imaplib's and imapclient's errors): each peer's adapter turns them
into its own codes (:mod:`scalix_migrate.netfaults`).

:func:`login` sends ``LOGIN`` with both arguments as quoted strings, or as literals where a
quoted string cannot carry them (non-ASCII, line breaks): imapclient's ``login()`` sends the
user name bare, and Scalix's ``mboxadmin:<admin>:<Display Name>`` contains blanks and colons.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imapclient import IMAPClient, SocketTimeout

from scalix_migrate.config import ImapDestinationConfig, TenantConfig, TLSMode
from scalix_migrate.imapfetch import quiet_protocol_trace
from scalix_migrate.netfaults import plain_text

#: An unanswered connect is given up on after this long even when reads may take longer.
CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: one IMAP server as the config describes it."""

    host: str
    port: int
    tls: TLSMode
    verify_certificate: bool
    ca_file: Path | None
    timeout_s: float

    @classmethod
    def source(cls, cfg: TenantConfig) -> Endpoint:
        imap = cfg.source.imap
        return cls(
            cfg.source.imap_host,
            imap.effective_port,
            imap.tls,
            imap.verify_certificate,
            imap.ca_file,
            imap.timeout_s,
        )

    @classmethod
    def destination(cls, dest: ImapDestinationConfig) -> Endpoint:
        return cls(
            dest.host,
            dest.effective_port,
            dest.tls,
            dest.verify_certificate,
            dest.ca_file,
            dest.timeout_s,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    ca_file = str(endpoint.ca_file) if endpoint.ca_file else None
    ctx = ssl.create_default_context(cafile=ca_file)
    if not endpoint.verify_certificate:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(endpoint: Endpoint) -> IMAPClient:
    """A connected, not yet authenticated client (see the module docstring for errors)."""
    e = endpoint
    ctx = ssl_context(e) if e.tls is not TLSMode.none else None
    client = IMAPClient(
        e.host,
        port=e.port,
        ssl=e.tls is TLSMode.implicit,
        ssl_context=ctx,
        timeout=SocketTimeout(connect=min(CONNECT_TIMEOUT_S, e.timeout_s), read=e.timeout_s),
    )
    try:
        quiet_protocol_trace(client)  # before anything is sent: no trace of the LOGIN line
        client.normalise_times = False  # keep INTERNALDATE's zone (an aware datetime)
        # Every FETCH and APPEND is one request/response; Nagle only adds latency (testbed.md).
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if e.tls is TLSMode.starttls:
            client.starttls(ctx)
    except BaseException:
        client.shutdown()
        raise
    return client


def astring(value: str) -> tuple[bytes, bytes | None]:
    """IMAP quoted string for plain ASCII, else a literal: (text before, literal bytes)."""
    raw = value.encode("utf-8")
    if raw.isascii() and not any(c in raw for c in b"\r\n\x00"):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"', None
    return b"", raw


def _text(data: Sequence[object]) -> str:
    return b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")


def login(client: IMAPClient, name: str, password: str) -> tuple[str, str]:
    """``LOGIN name password``; returns the server's (status, text), never logged.

    On ``OK`` the client is authenticated. A ``NO``/``BAD`` comes back as such; a dropped
    connection raises ``imaplib.IMAP4.abort``.
    """
    try:
        typ, text = _send_login(client, name, password)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as err:  # BAD
        typ, text = "BAD", plain_text(err)
    if typ == "OK":
        client._imap.state = "AUTH"
        client._cached_capabilities = None  # capabilities may change after LOGIN
    return typ, text


def _send_login(client: IMAPClient, name: str, password: str) -> tuple[str, str]:
    imap = client._imap
    literal_plus = client.has_capability("LITERAL+")
    tag = imap._new_tag()
    line = tag + b" LOGIN"
    for arg in (name, password):
        quoted, literal = astring(arg)
        if literal is None:
            line += b" " + quoted
            continue
        if literal_plus:
            line += b" {%d+}\r\n" % len(literal) + literal
            continue
        imap.send(line + b" {%d}\r\n" % len(literal))
        while imap._get_response():  # returns None on the continuation request
            if imap.tagged_commands.get(tag):
                # Refused before the literal was sent (e.g. BAD): that is the answer.
                typ, data = imap.tagged_commands.pop(tag)
                return typ, _text(data)
        line = literal
    imap.send(line + b"\r\n")
    typ, data = imap._command_complete("LOGIN", tag)
    return typ, _text(data)
