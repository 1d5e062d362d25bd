"""The groupware step of one user: staged items -> CalDAV/CardDAV (or files), exactly once.

For each folder holding appointments, tasks or contacts (read from the journal's message
ledger and the staging store, never from Scalix again), :func:`sync_user` builds the resources
(:mod:`scalix_migrate.groupware_items`), creates the folder's collection when it is missing,
and writes each resource through the groupware ledger (:mod:`scalix_migrate.state.groupware`):

* new: ``putting`` -> ``PUT If-None-Match: *`` -> ``stored`` with the ETag. A 412 means a
  resource of that name exists: equal (semantically) -> ``stored``; different -> an item error,
  never an overwrite of data we did not write;
* ``putting`` left by a crash: ``GET`` the name first; there and equal -> ``stored``; absent ->
  create; there with the ETag we were replacing -> replace;
* ``stored``/``verified`` with the same digest: nothing (a rerun adds nothing; a ``verified``
  resource is not read again, so edits users make after the cutover are not flagged);
* one that was stored but read back different (SXM-GW-008): read back again;
* changed digest (a delta: the item changed in Scalix): ``PUT If-Match: <etag>``;

then reads every stored resource back and compares it semantically
(:mod:`scalix_migrate.groupware_compare`): ``verified``, or ``failed`` with SXM-GW-008.
One resource's failure is an item error; the user's step goes on and reports it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import Counter
from collections.abc import Generator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import httpx

from scalix_migrate.config import (
    CalDavConfig,
    CardDavConfig,
    GroupwareFilesConfig,
    TenantConfig,
)
from scalix_migrate.dav import DavClient, Fetched, collection_slug, home_url
from scalix_migrate.errors import ItemError, UserError
from scalix_migrate.groupware_compare import differences
from scalix_migrate.groupware_items import (
    ItemIssue,
    Resource,
    StagedItem,
    build_resources,
)
from scalix_migrate.records import ItemClass, LoadState, ScalixUser
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import Journal
from scalix_migrate.state.groupware import (
    FAILED,
    MESSAGE_ONLY,
    PUTTING,
    STORED,
    VERIFIED,
    GroupwareRow,
)
from scalix_migrate.user_context import UserContext
from scalix_migrate.xoauth2 import TokenSource

Book = Literal["calendar", "contacts"]
_BOOK_OF = {
    ItemClass.appointment: "calendar",
    ItemClass.task: "calendar",
    ItemClass.contact: "contacts",
}
_READABLE = (LoadState.staged, LoadState.appending, LoadState.loaded)


class GroupwareSink(Protocol):
    """Where one book of one user goes: a DAV server or a directory of files."""

    def ensure_collection(self, folder: str, *, components: tuple[str, ...]) -> str: ...
    def create(self, url: str, data: bytes, content_type: str) -> str | None: ...
    def replace(self, url: str, data: bytes, content_type: str, etag: str | None) -> str: ...
    def fetch(self, url: str) -> Fetched | None: ...


class DavSink:
    """A CalDAV/CardDAV server: one collection per folder (one in all for ``google``)."""

    def __init__(
        self, client: DavClient, *, single_collection: bool, max_bytes: int | None = None
    ) -> None:
        self.client = client
        self.single = single_collection
        self.max_bytes = max_bytes
        self.limits: dict[str, int] = {}  # collection URL -> the size limit in force

    def ensure_collection(self, folder: str, *, components: tuple[str, ...]) -> str:
        if self.single:
            url = self.client.home
        else:
            url = self.client.ensure_collection(
                collection_slug(folder), folder.rsplit("/", 1)[-1], components=components
            )
        if url not in self.limits:
            told = [self.max_bytes, self.client.max_resource_size(url)]
            if known := [n for n in told if n is not None]:
                self.limits[url] = min(known)
        return url

    def _check_size(self, url: str, data: bytes) -> None:
        # An item over the limit is refused here, reported by name, not sent to fail there.
        limit = self.limits.get(url.rsplit("/", 1)[0] + "/")
        if limit is not None and len(data) > limit:
            raise ItemError(
                f"{len(data)} bytes, over the server's limit of {limit} bytes",
                code="SXM-GW-004",
                user=self.client.user,
            )

    def create(self, url: str, data: bytes, content_type: str) -> str | None:
        self._check_size(url, data)
        return self.client.create(url, data, content_type)

    def replace(self, url: str, data: bytes, content_type: str, etag: str | None) -> str:
        self._check_size(url, data)
        return self.client.replace(url, data, content_type, etag)

    def fetch(self, url: str) -> Fetched | None:
        return self.client.fetch(url)


class FilesSink:
    """``type: files``: ``<path>/<folder slug>/<name>``; the ETag is the file's hash."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure_collection(self, folder: str, *, components: tuple[str, ...]) -> str:
        path = self.root / collection_slug(folder)
        path.mkdir(parents=True, exist_ok=True)
        return str(path) + os.sep

    def create(self, url: str, data: bytes, content_type: str) -> str | None:
        if Path(url).exists():
            return None
        return self._write(Path(url), data)

    def replace(self, url: str, data: bytes, content_type: str, etag: str | None) -> str:
        return self._write(Path(url), data)

    def fetch(self, url: str) -> Fetched | None:
        try:
            data = Path(url).read_bytes()
        except FileNotFoundError:
            return None
        return Fetched(data, hashlib.sha256(data).hexdigest())

    @staticmethod
    def _write(path: Path, data: bytes) -> str:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return hashlib.sha256(data).hexdigest()


@dataclass
class GroupwareResult:
    """Counts of one user's groupware step (per kind: event, task, contact, group)."""

    user: str
    found: Counter[str] = field(default_factory=Counter)  # resources built from the items
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    reconciled: Counter[str] = field(default_factory=Counter)  # found there after a crash
    verified: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    mismatched: int = 0  # read back and found different (SXM-GW-008): fails the user
    message_only: int = 0  # items with only Scalix properties: migrated as messages
    broken: int = 0  # items whose data does not parse (SXM-GW-001)
    problems: list[str] = field(default_factory=list)

    def flat(self) -> dict[str, int | str]:
        """Plain counts for logs, artifacts and task results (``events_created`` …)."""
        out: dict[str, int | str] = {"user": self.user}
        for kind in ("event", "task", "contact", "group"):
            for what in ("found", "created", "updated", "verified", "failed"):
                out[f"{kind}s_{what}"] = getattr(self, what)[kind]
        out["resources_failed"] = sum(self.failed.values())
        out["message_only"] = self.message_only
        out["broken"] = self.broken
        return out


def _auth(
    dest: CalDavConfig | CardDavConfig, cfg: TenantConfig, user: ScalixUser, login: str
) -> httpx.Auth:
    if dest.auth == "bearer":
        tokens = UserContext.of(cfg, user).tokens(command=dest.token_command, file=dest.token_file)
        return _BearerAuth(tokens)
    assert dest.password is not None  # the config model requires one
    return httpx.BasicAuth(login, dest.password.resolve())


class _BearerAuth(httpx.Auth):
    """OAuth2 bearer token; on a 401 the token is fetched again once (tokens expire)."""

    def __init__(self, tokens: TokenSource) -> None:
        self.tokens = tokens

    def __repr__(self) -> str:
        return "BearerAuth(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.tokens.token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.tokens.token(refresh=True)}"
            yield request


def dav_client(
    dest: CalDavConfig | CardDavConfig, cfg: TenantConfig, user: ScalixUser
) -> DavClient:
    """The user's DAV client (not yet entered): home from the preset, login from the template."""
    context = UserContext.of(cfg, user)
    login = context.render(dest.login_template)
    home = home_url(context.render(dest.url), dest.preset, dest.type, login)
    verify: bool | str = str(dest.ca_file) if dest.ca_file else dest.verify_certificate
    return DavClient(
        home,
        kind=dest.type,
        auth=_auth(dest, cfg, user, login),
        user=user.key,
        verify=verify,
        timeout_s=dest.timeout_s,
    )


def _sinks(cfg: TenantConfig, user: ScalixUser, stack: ExitStack) -> dict[str, GroupwareSink]:
    sinks: dict[str, GroupwareSink] = {}
    targets: dict[str, CalDavConfig | CardDavConfig | GroupwareFilesConfig | None] = {
        "calendar": cfg.destination.calendar,
        "contacts": cfg.destination.contacts,
    }
    for book, dest in targets.items():
        if dest is None:
            continue
        if isinstance(dest, GroupwareFilesConfig):
            root = Path(UserContext.of(cfg, user).render(dest.path)).expanduser() / book
            sinks[book] = FilesSink(root)
            continue
        client = stack.enter_context(dav_client(dest, cfg, user))
        sinks[book] = DavSink(
            client, single_collection=dest.preset == "google", max_bytes=dest.max_resource_bytes
        )
    return sinks


def groupware_configured(cfg: TenantConfig) -> bool:
    return cfg.destination.calendar is not None or cfg.destination.contacts is not None


def _items_by_folder(
    cfg: TenantConfig, journal: Journal, user: ScalixUser
) -> dict[tuple[str, str], list[StagedItem]]:
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
    out: dict[tuple[str, str], list[StagedItem]] = {}
    seen: set[tuple[str, str]] = set()
    for entry in journal.entries(cfg.tenant, user.key, states=_READABLE):
        book = _BOOK_OF.get(entry.item_class)
        if book is None or (entry.folder, entry.sha256) in seen:
            continue
        seen.add((entry.folder, entry.sha256))
        body = store.get(entry.sha256, user=user.key)
        order = (entry.uidvalidity << 32) | entry.uid  # UIDs grow with time in a folder
        out.setdefault((book, entry.folder), []).append(
            StagedItem.of_message(entry.folder, entry.sha256, body, order)
        )
    return out


def sync_user(cfg: TenantConfig, journal: Journal, user: ScalixUser) -> GroupwareResult:
    """Write and verify the user's calendar and contact items (see the module doc)."""
    result = GroupwareResult(user=user.key)
    if not groupware_configured(cfg):
        return result
    with ExitStack() as stack:
        sinks = _sinks(cfg, user, stack)
        rows = journal.groupware_rows(cfg.tenant, user.key)
        for (book, folder), items in sorted(_items_by_folder(cfg, journal, user).items()):
            sink = sinks.get(book)
            if sink is None:
                continue
            built = build_resources(items)
            _record_issues(cfg, journal, user, book, built.issues, result)
            if not built.resources:
                continue
            tasks_only = all(r.kind.value == "task" for r in built.resources)
            comps = ("VTODO",) if tasks_only else ("VEVENT", "VTODO")
            collection = sink.ensure_collection(folder, components=comps)
            writer = _Writer(cfg, journal, user, sink, book, result)
            for resource in built.resources:
                result.found[resource.kind.value] += 1
                row = rows.get((book, folder, resource.name))
                writer.write(resource, collection + resource.name, row)
    return result


def _record_issues(
    cfg: TenantConfig,
    journal: Journal,
    user: ScalixUser,
    book: str,
    issues: list[ItemIssue],
    result: GroupwareResult,
) -> None:
    for issue in issues:
        broken = issue.code == "SXM-GW-001"
        if broken:
            result.broken += 1
            result.problems.append(f"{issue.folder} item {issue.sha256[:12]}: {issue.detail}")
        else:
            result.message_only += 1
        journal.gw_record(
            cfg.tenant,
            user.key,
            book=book,
            folder=issue.folder,
            name=f"item-{issue.sha256}",
            state=FAILED if broken else MESSAGE_ONLY,
            kind="item",
            sources=[issue.sha256],
            error_code=issue.code,
            error_detail=issue.detail,
        )


class _Writer:
    """Writes one folder's resources through the two-phase ledger, then verifies them."""

    def __init__(
        self,
        cfg: TenantConfig,
        journal: Journal,
        user: ScalixUser,
        sink: GroupwareSink,
        book: str,
        result: GroupwareResult,
    ) -> None:
        self.cfg, self.journal, self.user, self.sink = cfg, journal, user, sink
        self.book, self.result = book, result

    def _record(self, r: Resource, state: str, **values: object) -> None:
        self.journal.gw_record(
            self.cfg.tenant,
            self.user.key,
            book=self.book,
            folder=r.folder,
            name=r.name,
            state=state,
            kind=r.kind.value,
            uid=r.uid,
            sources=list(r.sources),
            **values,
        )

    def write(self, r: Resource, url: str, row: GroupwareRow | None) -> None:
        kind = r.kind.value
        try:
            stored_once = row is not None and (
                row.state in (STORED, VERIFIED)
                or (row.state == FAILED and row.error_code == "SXM-GW-008")
            )
            if row is not None and stored_once and row.digest == r.digest:
                self.result.unchanged[kind] += 1
                if row.state == VERIFIED:
                    self.result.verified[kind] += 1
                    return
                self._verify(r, url)
                return
            if row is not None and row.state == PUTTING:
                done = self._reconcile(r, url, row)
                if done:
                    return
            elif row is not None and stored_once:
                self._update(r, url, row.etag)
                return
            self._create(r, url)
        except ItemError as exc:
            self.result.failed[kind] += 1
            self.result.mismatched += exc.code == "SXM-GW-008"
            self.result.problems.append(f"{r.folder}/{r.name}: {exc.message}")
            self._record(r, FAILED, error_code=exc.code, error_detail=exc.message, digest=r.digest)

    def _create(self, r: Resource, url: str) -> None:
        self._record(r, PUTTING, digest=r.digest, replaces_etag=None, href=url, error_code=None)
        etag = self.sink.create(url, r.data, r.content_type)
        if etag is None:
            # A resource of this name is there, and the journal does not say we wrote it.
            there = self.sink.fetch(url)
            if there is None or differences(r.data, there.data):
                raise ItemError(
                    "a different resource with the same UID exists on the server: not overwritten",
                    code="SXM-GW-004",
                    user=self.user.key,
                )
            self.result.reconciled[r.kind.value] += 1
            etag = there.etag or ""
        else:
            self.result.created[r.kind.value] += 1
        self._record(r, STORED, etag=etag)
        self._verify(r, url)

    def _update(self, r: Resource, url: str, old_etag: str | None) -> None:
        self._record(r, PUTTING, digest=r.digest, replaces_etag=old_etag, href=url)
        etag = self.sink.replace(url, r.data, r.content_type, old_etag)
        self.result.updated[r.kind.value] += 1
        self._record(r, STORED, etag=etag, replaces_etag=None)
        self._verify(r, url)

    def _reconcile(self, r: Resource, url: str, row: GroupwareRow) -> bool:
        """A crash left the row ``putting``: look before sending. True when settled here."""
        there = self.sink.fetch(url)
        if there is None:
            return False  # the PUT never landed: create it now
        if not differences(r.data, there.data):
            self.result.reconciled[r.kind.value] += 1
            self._record(r, STORED, etag=there.etag or "", digest=r.digest, replaces_etag=None)
            self._verify(r, url)
            return True
        if row.replaces_etag is not None and there.etag == row.replaces_etag:
            self._update(r, url, row.replaces_etag)  # the old version is still there
            return True
        raise ItemError(
            "the resource on the server differs from what was being written: not overwritten",
            code="SXM-GW-004",
            user=self.user.key,
        )

    def _verify(self, r: Resource, url: str) -> None:
        there = self.sink.fetch(url)
        diff = ["resource missing"] if there is None else differences(r.data, there.data)
        if diff:
            detail = "; ".join(diff[:5])
            raise ItemError(f"read back differs: {detail}", code="SXM-GW-008", user=self.user.key)
        self.result.verified[r.kind.value] += 1
        self._record(r, VERIFIED, etag=(there.etag if there else None) or "")


def require_verified(result: GroupwareResult) -> None:
    """Fail the user when a resource read back differs, as mail verification does; item
    errors (broken data, a refused resource) are recorded and reported, the user goes on."""
    if result.mismatched:
        raise UserError(
            f"{result.mismatched} calendar/contact resource(s) differ when read back: "
            + "; ".join(result.problems[:3]),
            code="SXM-GW-008",
            user=result.user,
        )
