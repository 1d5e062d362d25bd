"""Preflight checks of the destination and of the staging directory.

IMAP destinations: the sample user's sink, opened through its
:class:`~scalix_migrate.user_context.UserContext` exactly as the load opens it (connection,
login, password or token command), is reachable and its credentials work; a scratch folder
can be created and removed; where the server reports a quota (RFC 2087), the free quota is at
least the user's Scalix mailbox size. Maildir/mbox: the sample user's path is writable and its
disk has room for the selected users. Staging: writable, with room for the selected users.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from scalix_migrate.config import ImapDestinationConfig, TenantConfig, TLSMode
from scalix_migrate.destinations.imap import ImapDestination
from scalix_migrate.errors import CATALOGUE, MigrationError, TransientError
from scalix_migrate.netfaults import classify, describe, destination_code
from scalix_migrate.preflight_findings import Finding, finding
from scalix_migrate.records import ScalixUser
from scalix_migrate.user_context import UserContext


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
        path = Path(UserContext.of(cfg, sample).render(dest.path))
    except MigrationError as exc:
        return [finding("PF-DST-005", f"destination.path {dest.path!r}: {exc.message}")]
    return _space_findings("PF-DST-005", "destination path", path, estimated_bytes(users), None)


def imap_destination_findings(
    dest: ImapDestinationConfig, cfg: TenantConfig, user: ScalixUser
) -> list[Finding]:
    """Log in as the load will (the user's context opens the same sink, with the same login,
    password or token command), then try a scratch folder and the quota. Never raises."""
    out: list[Finding] = []
    if dest.tls is TLSMode.none or not dest.verify_certificate:
        out.append(
            finding(
                "PF-DST-006", f"destination tls={dest.tls.value}, verify={dest.verify_certificate}"
            )
        )
    try:
        context = UserContext.of(cfg, user)
        sink = context.open_destination()
        assert isinstance(sink, ImapDestination)
        with sink:
            assert sink.client is not None
            out += _scratch_folder(sink.client, sink.login_name)
            out += _quota(sink.client, user, sink.login_name)
    except TransientError as exc:
        # Refused, silent, dropped or TLS: the error's remedy is the one for what happened.
        out.append(finding("PF-DST-001", exc.message, remedy=exc.remedy))
    except (IMAPClientError, OSError, EOFError) as exc:
        # Lost while reading the layout after the login: the sink leaves those unwrapped.
        fault = classify(exc)
        where = f"destination {dest.host}:{dest.effective_port}"
        remedy = CATALOGUE[destination_code(fault)].remedy
        out.append(finding("PF-DST-001", describe(fault, where), remedy=remedy))
    except MigrationError as exc:
        # A refused login, a token command that failed, a password that cannot be sent: all
        # for the operator to fix on the destination side.
        where = f"{dest.host}:{dest.effective_port}"
        out.append(
            finding(
                "PF-DST-002",
                f"at {where}: {exc.message}",
                user=user.key,
                remedy=_login_remedy(dest),
            )
        )
    return out


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
