"""Preflight checks of the destination and of the staging directory.

IMAP destinations (imapclient): reachable; the sample user's credentials work; a scratch folder
can be created and removed; where the server reports a quota (RFC 2087), the free quota is at
least the user's Scalix mailbox size. Maildir/mbox: the sample user's path is writable and its
disk has room for the selected users. Staging: writable, with room for the selected users.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from scalix_migrate.config import ImapDestinationConfig, TenantConfig, TLSMode
from scalix_migrate.errors import CATALOGUE, ConfigError
from scalix_migrate.imapfetch import quiet_protocol_trace
from scalix_migrate.netfaults import classify, describe, destination_code, plain_text, server_text
from scalix_migrate.preflight import Finding, finding
from scalix_migrate.records import ScalixUser
from scalix_migrate.scalix.imap_login import imap_quote, ssl_context

TOKEN_COMMAND_TIMEOUT_S = 60.0


def placeholders(cfg: TenantConfig, user: ScalixUser) -> dict[str, str]:
    email = user.primary_address or user.auth_id or user.display_name
    local, _, domain = email.partition("@")
    return {
        "email": email,
        "local_part": local,
        "domain": domain,
        "auth_id": user.auth_id or email,
        "display_name": user.display_name,
        "tenant": cfg.tenant,
    }


def estimated_bytes(users: Iterable[ScalixUser]) -> int:
    return sum((u.mailbox_kib or 0) for u in users) * 1024


def _free_space(path: Path) -> tuple[Path, int, bool]:
    """(nearest existing ancestor, its free bytes, writable) for a path that may not exist."""
    probe = path.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free, os.access(probe, os.W_OK | os.X_OK)


def _space_findings(code: str, what: str, path: Path, need: int, user: str | None) -> list[Finding]:
    base, free, writable = _free_space(path)
    if not writable:
        return [finding(code, f"{what} {path}: {base} is not writable", user=user)]
    if free < need:
        return [
            finding(
                code,
                f"{what} {path}: {free // 2**20} MiB free on {base}, "
                f"the selected users need about {need // 2**20} MiB",
                user=user,
            )
        ]
    return []


def staging_findings(cfg: TenantConfig, users: list[ScalixUser]) -> list[Finding]:
    return _space_findings(
        "PF-STG-001", "staging directory", cfg.options.staging_dir, estimated_bytes(users), None
    )


def destination_findings(
    cfg: TenantConfig, sample: ScalixUser | None, users: list[ScalixUser]
) -> list[Finding]:
    dest = cfg.destination
    if sample is None:
        return []
    if isinstance(dest, ImapDestinationConfig):
        return imap_destination_findings(dest, cfg, sample)
    try:
        path = Path(dest.path.format(**placeholders(cfg, sample)))
    except (KeyError, IndexError, ValueError) as exc:
        return [finding("PF-DST-005", f"destination.path {dest.path!r}: bad placeholder {exc}")]
    return _space_findings("PF-DST-005", "destination path", path, estimated_bytes(users), None)


def _token(dest: ImapDestinationConfig, values: dict[str, str]) -> str:
    if dest.token_file:
        return Path(dest.token_file.format(**values)).expanduser().read_text().strip()
    assert dest.token_command is not None
    argv = [part.format(**values) for part in dest.token_command.split()]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=TOKEN_COMMAND_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise ConfigError(f"token_command exited {done.returncode}", code="SXM-CFG-002")
    return done.stdout.strip()


def imap_destination_findings(
    dest: ImapDestinationConfig, cfg: TenantConfig, user: ScalixUser
) -> list[Finding]:
    out: list[Finding] = []
    if dest.tls is TLSMode.none or not dest.verify_certificate:
        out.append(
            finding(
                "PF-DST-006", f"destination tls={dest.tls.value}, verify={dest.verify_certificate}"
            )
        )
    values = placeholders(cfg, user)
    login = dest.login_template.format(**values)
    where = f"{dest.host}:{dest.effective_port}"
    ctx = (
        ssl_context(
            verify=dest.verify_certificate, ca_file=str(dest.ca_file) if dest.ca_file else None
        )
        if dest.tls is not TLSMode.none
        else None
    )
    try:
        client = IMAPClient(
            dest.host,
            port=dest.effective_port,
            ssl=dest.tls is TLSMode.implicit,
            ssl_context=ctx,
            timeout=dest.timeout_s,
        )
        quiet_protocol_trace(client)  # no DEBUG trace of the LOGIN line or of mail
        if dest.tls is TLSMode.starttls:
            client.starttls(ctx)
    except (OSError, EOFError, IMAPClientError) as exc:
        return [*out, _unreachable(exc, where, connecting=True)]
    try:
        try:
            if dest.auth == "xoauth2":
                client.oauth2_login(login, _token(dest, values))
            else:
                assert dest.password is not None
                typ, data = client._imap._simple_command(
                    "LOGIN", imap_quote(login), imap_quote(dest.password.resolve())
                )
                if typ != "OK":
                    raise LoginError(" ".join(server_text(data)) or typ)
                client._imap.state = "AUTH"
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            return [*out, _unreachable(exc, where, connecting=False)]
        except (LoginError, imaplib.IMAP4.error, ConfigError, subprocess.TimeoutExpired) as exc:
            # The server's refusal text never contains the password we sent.
            text = exc.message if isinstance(exc, ConfigError) else plain_text(exc)
            return [
                *out,
                finding(
                    "PF-DST-002",
                    f"login {login!r} at {where} refused: {text}",
                    user=user.key,
                    remedy=_login_remedy(dest),
                ),
            ]
        out += _scratch_folder(client, login)
        out += _quota(client, user, login)
    finally:
        with contextlib.suppress(OSError, IMAPClientError):
            client.logout()
    return out


def _unreachable(exc: BaseException, where: str, *, connecting: bool) -> Finding:
    """PF-DST-001 with the remedy for what happened: refused, silent, dropped, TLS."""
    fault = classify(exc, connecting=connecting)
    remedy = CATALOGUE[destination_code(fault)].remedy
    return finding("PF-DST-001", describe(fault, where), remedy=remedy)


def _login_remedy(dest: ImapDestinationConfig) -> str:
    if dest.auth == "xoauth2":
        return (
            "Check destination.token_command or destination.token_file (the token must be for "
            "the login shown) and destination.login_template."
        )
    return (
        "Check destination.password (the secret it references) and destination.login_template "
        "(it gives the login shown for this user)."
    )


def _scratch_folder(client: IMAPClient, login: str) -> list[Finding]:
    name = f"sxm-preflight-{uuid.uuid4().hex[:8]}"
    try:
        client.create_folder(name)
    except (IMAPClientError, OSError) as exc:
        return [finding("PF-DST-003", f"{login}: CREATE {name} failed: {exc}")]
    try:
        client.delete_folder(name)
    except (IMAPClientError, OSError) as exc:
        return [finding("PF-DST-003", f"{login}: DELETE {name} failed (remove it by hand): {exc}")]
    return []


def _quota(client: IMAPClient, user: ScalixUser, login: str) -> list[Finding]:
    if not client.has_capability("QUOTA") or not user.mailbox_kib:
        return []
    try:
        _, quotas = client.get_quota_root("INBOX")
    except (IMAPClientError, OSError):
        return []
    except IndexError:
        # imapclient cannot parse "* QUOTAROOT INBOX" without roots: the mailbox has no quota.
        return []
    for q in quotas:
        if q.resource.upper() != "STORAGE":
            continue
        free_kib = q.limit - q.usage
        if free_kib < user.mailbox_kib:
            return [
                finding(
                    "PF-DST-004",
                    f"{login}: {free_kib} KiB free of a {q.limit} KiB quota, the Scalix "
                    f"mailbox holds {user.mailbox_kib} KiB",
                    user=user.key,
                )
            ]
    return []
