"""Preflight checks of the calendar and address-book destinations (destination.calendar /
destination.contacts), for the sample user.

CalDAV/CardDAV: the server answers and the login works (PROPFIND of the user's home); a scratch
calendar or address book can be created and deleted (MKCALENDAR / extended MKCOL, then DELETE;
for Google's one-collection endpoint: the collection exists); the server's
``max-resource-size`` is read and reported when it is below the configured limit (larger items
are refused before sending, each reported, never dropped silently). ``files``: the sample
user's directory is writable.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from scalix_migrate.config import (
    CalDavConfig,
    CardDavConfig,
    GroupwareFilesConfig,
    TenantConfig,
)
from scalix_migrate.dav import DavClient
from scalix_migrate.errors import MigrationError, TransientError
from scalix_migrate.groupware_sync import dav_client
from scalix_migrate.preflight_findings import Finding, finding
from scalix_migrate.records import ScalixUser
from scalix_migrate.user_context import UserContext

#: Below this a server would refuse ordinary items with attachments or long recurrences.
SMALL_LIMIT_BYTES = 1 << 20


def groupware_findings(cfg: TenantConfig, sample: ScalixUser | None) -> list[Finding]:
    """Every groupware check for ``sample``; nothing when no groupware destination is set."""
    if sample is None:
        return []
    out: list[Finding] = []
    for book, dest in (
        ("calendar", cfg.destination.calendar),
        ("contacts", cfg.destination.contacts),
    ):
        if dest is None:
            continue
        if isinstance(dest, GroupwareFilesConfig):
            out += _files_findings(cfg, sample, book, dest)
        else:
            out += _dav_findings(cfg, sample, book, dest)
    return out


def _files_findings(
    cfg: TenantConfig, user: ScalixUser, book: str, dest: GroupwareFilesConfig
) -> list[Finding]:
    try:
        path = Path(UserContext.of(cfg, user).render(dest.path)).expanduser() / book
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".sxm-preflight-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except (OSError, MigrationError) as exc:
        detail = exc.message if isinstance(exc, MigrationError) else type(exc).__name__
        return [finding("PF-GW-004", f"destination.{book}.path not writable: {detail}")]
    return []


def _dav_findings(
    cfg: TenantConfig, user: ScalixUser, book: str, dest: CalDavConfig | CardDavConfig
) -> list[Finding]:
    where = f"destination.{book}"
    out: list[Finding] = []
    host = urlsplit(dest.url).hostname or ""
    if dest.url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
        out.append(finding("PF-GW-005", f"{where}.url uses plain http", user=user.key))
    try:
        with dav_client(dest, cfg, user) as client:
            client.check_login()
            if dest.preset == "google":
                # One calendar / address book for every folder: it must exist, none is created.
                if not client.exists(client.home):
                    return [*out, finding("PF-GW-002", f"{where}: {client.home} not found")]
                limit = client.max_resource_size(client.home)
            else:
                limit = _scratch_collection(client)
    except TransientError as exc:
        return [*out, finding("PF-GW-001", f"{where}: {exc.message}", user=user.key)]
    except MigrationError as exc:
        code = "PF-GW-003" if exc.code == "SXM-GW-006" else "PF-GW-002"
        return [*out, finding(code, f"{where}: {exc.message}", user=user.key)]
    wanted = dest.max_resource_bytes or SMALL_LIMIT_BYTES
    if limit is not None and limit < wanted:
        out.append(
            finding(
                "PF-GW-006",
                f"{where}: the server takes resources up to {limit} bytes "
                f"(below {wanted}); larger items will be reported, not sent",
                user=user.key,
            )
        )
    return out


def _scratch_collection(client: DavClient) -> int | None:
    """Create and delete a scratch collection; return its ``max-resource-size`` if told."""
    slug = f"sxm-preflight-{uuid.uuid4().hex[:8]}"
    url = client.ensure_collection(slug, "scalix-migrate preflight")
    try:
        return client.max_resource_size(url)
    finally:
        with contextlib.suppress(TransientError):
            client.delete(url)
        if client.exists(url):
            raise MigrationError(
                f"scratch collection {slug} could not be deleted (remove it by hand)",
                code="SXM-GW-005",
                user=client.user,
            )
