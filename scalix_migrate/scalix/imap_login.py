"""A small IMAP helper for preflight: open a Scalix mailbox through the mboxadmin login.

``mboxadmin_session(cfg, target)`` connects to the source IMAP server with the configured TLS
mode, timeout and CA, and logs in as ``mboxadmin:<admin>:<target>`` with the admin's password.
The login name is sent as a quoted string (imapclient would send it bare, and Scalix names
contain spaces). The extract path has its own adapter (``imap_source.ScalixMailbox``); this one
only proves that the door opens, read-only.
"""

from __future__ import annotations

import contextlib
import imaplib
import ssl
from collections.abc import Iterator

from imapclient import IMAPClient

from scalix_migrate.config import SourceIMAPConfig, TenantConfig, TLSMode
from scalix_migrate.errors import FatalError, TransientError, UserError
from scalix_migrate.imapfetch import quiet_protocol_trace
from scalix_migrate.netfaults import classify, describe, plain_text, server_text, source_code
from scalix_migrate.records import ScalixUser


def imap_quote(value: str) -> str:
    """An IMAP quoted string; refuse what a quoted string cannot carry."""
    if any(c in value for c in "\r\n\x00") or not value.isascii():
        raise UserError(
            "a login name with line breaks or non-ASCII characters cannot be sent quoted",
            code="SXM-IMAP-002",
        )
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ssl_context(*, verify: bool, ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def login_identity(cfg: TenantConfig, user: ScalixUser) -> str:
    """The name that goes after ``mboxadmin:<admin>:`` for ``user``."""
    match cfg.source.imap.login_identity:
        case "auth_id":
            return user.auth_id or user.primary_address or user.display_name
        case "display_name":
            return user.display_name
        case _:
            return user.primary_address or user.auth_id or user.display_name


@contextlib.contextmanager
def connect(imap: SourceIMAPConfig, host: str) -> Iterator[IMAPClient]:
    """Connect (no login) with the configured TLS mode; errors are SXM-IMAP-001/003."""
    # Loading the CA store costs a tenth of a second: only for a TLS connection.
    ctx = (
        ssl_context(
            verify=imap.verify_certificate, ca_file=str(imap.ca_file) if imap.ca_file else None
        )
        if imap.tls is not TLSMode.none
        else None
    )
    port = imap.effective_port
    try:
        client = IMAPClient(
            host,
            port=port,
            ssl=imap.tls is TLSMode.implicit,
            ssl_context=ctx,
            timeout=imap.timeout_s,
        )
        quiet_protocol_trace(client)  # no DEBUG trace of the LOGIN line or of mail
        if imap.tls is TLSMode.starttls:
            client.starttls(ctx)  # ctx is set for every TLS mode
    except ssl.SSLCertVerificationError as exc:
        raise FatalError(
            f"TLS certificate of {host}:{port} not trusted: {exc.verify_message}",
            code="SXM-IMAP-003",
        ) from None
    except (OSError, EOFError, imaplib.IMAP4.error) as exc:
        fault = classify(exc, connecting=True)
        raise TransientError(
            describe(fault, f"source IMAP {host}:{port}"), code=source_code(fault)
        ) from None
    try:
        yield client
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()


def login_mboxadmin(client: IMAPClient, admin: str, target: str, password: str) -> None:
    """``LOGIN "mboxadmin:<admin>:<target>" "<password>"``; a refusal is SXM-IMAP-002."""
    name = imap_quote(f"mboxadmin:{admin}:{target}")
    try:
        typ, data = client._imap._simple_command("LOGIN", name, imap_quote(password))
    except imaplib.IMAP4.abort as exc:
        fault = classify(exc)
        raise TransientError(
            describe(fault, "source IMAP during LOGIN"), code=source_code(fault), user=target
        ) from None
    except imaplib.IMAP4.error as exc:
        # imaplib puts the server's text in the exception; it never contains the password.
        raise UserError(
            f"mboxadmin login as {admin!r} for {target!r} refused: {plain_text(exc)}",
            code="SXM-IMAP-002",
            user=target,
        ) from None
    if typ != "OK":
        raise UserError(
            f"mboxadmin login as {admin!r} for {target!r} refused: "
            + (" ".join(server_text(data)) or typ),
            code="SXM-IMAP-002",
            user=target,
        )
    client._imap.state = "AUTH"


@contextlib.contextmanager
def mboxadmin_session(cfg: TenantConfig, target: str) -> Iterator[IMAPClient]:
    """An authenticated IMAP session on ``target``'s mailbox via the admin's mboxadmin right."""
    with connect(cfg.source.imap, cfg.source.imap_host) as client:
        login_mboxadmin(client, cfg.source.admin_user, target, cfg.source.admin_password.resolve())
        yield client
