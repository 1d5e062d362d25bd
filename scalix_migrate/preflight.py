"""preflight-validate: prove, before anything moves, that the selected users will migrate.

``run_preflight(cfg, discovery)`` runs every check and returns a :class:`PreflightReport`; it
raises nothing for a finding (a check that cannot run is itself a finding). Each finding has a
stable code from :data:`PREFLIGHT_CODES` (the README prints the catalogue), a severity —
``blocking`` (nothing may move), ``exclude-user`` (this user is left out of the run) or
``warning`` — the user it concerns, a message, and the remedy the operator can apply.

Checks: SSH reachable and host key good, admin commands runnable and understood; the admin is a
full administrator and holds mboxadmin; the test user exists, is named by its primary address
and opens read-only over IMAP through the mboxadmin login (folders listed, one header fetched
with BODY.PEEK); per user: an address, export identity = primary address (CloudM's M0022),
message store, lock state, folder names containing ``/`` or ``\\``; sessions open now;
TLS verified or knowingly disabled; concurrency within Scalix's limits; the destination
(see :mod:`scalix_migrate.preflight_destination`); free space in the staging directory.
"""

from __future__ import annotations

import functools
import logging
import shlex
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from imapclient.exceptions import IMAPClientError

from scalix_migrate.codes import PREFLIGHT_CODES as PREFLIGHT_CODES  # callers' old name
from scalix_migrate.codes import (
    SCALIX_CONNECT_RATE_LIMIT,
    SCALIX_CONNECTION_LIMIT,
    SCALIX_SIGNONS_PER_USER,
)
from scalix_migrate.codes import Severity as Severity
from scalix_migrate.config import TenantConfig, TLSMode
from scalix_migrate.discovery import Discovery, discover_users, matches
from scalix_migrate.errors import FatalError, MigrationError, PreflightError, TransientError
from scalix_migrate.folder_names import FINDING_CODE, bad_folder_names
from scalix_migrate.netfaults import plain_text
from scalix_migrate.preflight_destination import destination_findings, staging_findings
from scalix_migrate.preflight_findings import Finding as Finding
from scalix_migrate.preflight_findings import finding as finding
from scalix_migrate.preflight_groupware import groupware_findings
from scalix_migrate.ratelimit import limiter_for
from scalix_migrate.records import ScalixUser, SourceFolder
from scalix_migrate.scalix.admin import ScalixAdmin
from scalix_migrate.scalix.parsers import parse_sessions
from scalix_migrate.user_context import UserContext

log = logging.getLogger(__name__)

SOURCE_SESSIONS_PER_USER = 1  # extract reads one user over one IMAP session at a time
MAX_UNPARSED_FINDINGS = 50


@dataclass
class PreflightReport:
    """All findings, and the users they leave in or out."""

    findings: list[Finding] = field(default_factory=list)
    users: list[ScalixUser] = field(default_factory=list)  # selected by discovery
    # Users whose folder names this preflight did not list (finished by an earlier run):
    # their transfer checks them (extract.refuse_bad_folder_names).
    folders_left_to_transfer: frozenset[str] = frozenset()

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.blocking and f.counts]

    @property
    def ok(self) -> bool:
        return not self.blocking

    @property
    def left_out(self) -> dict[str, Finding]:
        """User key -> the first finding that leaves the user out of the run (an
        ``exclude-user`` finding not accepted), for the users preflight checked. A finding
        names its user by key (the primary address) or by Scalix name, in any case."""
        out: dict[str, Finding] = {}
        for f in self.findings:
            if f.severity is not Severity.exclude_user or not f.user or not f.counts:
                continue
            named = f.user.lower()
            for u in self.users:
                if named in (u.key, u.name.lower()):
                    out.setdefault(u.key, f)
        return out

    @property
    def eligible_users(self) -> list[ScalixUser]:
        """The users preflight checked that the run migrates: those not :attr:`left_out`."""
        out = self.left_out
        return [u for u in self.users if u.key not in out]

    def to_rows(self) -> list[dict[str, str]]:
        """One dict per finding: code, severity, user, message, remedy, accepted ("yes"/"")."""
        return [
            {
                "code": f.code,
                "severity": f.severity.value,
                "user": f.user or "",
                "message": f.message,
                "remedy": f.remedy,
                "accepted": "yes" if f.accepted else "",
            }
            for f in self.findings
        ]

    def raise_if_blocking(self) -> None:
        if self.blocking:
            first = self.blocking[0]
            raise PreflightError(
                f"{len(self.blocking)} blocking preflight finding(s), first {first.code}: "
                f"{first.message}",
                code=_ERROR_OF.get(first.code, "SXM-PRE-001"),
                remedy=first.remedy,
            )


_ERROR_OF = {
    "PF-SSH-001": "SXM-SSH-001",
    "PF-SSH-002": "SXM-SSH-002",
    "PF-SSH-003": "SXM-SSH-003",
    "PF-SSH-004": "SXM-SSH-004",
    "PF-SSH-005": "SXM-SSH-005",
    "PF-IMAP-001": "SXM-IMAP-001",
    "PF-TST-003": "SXM-IMAP-002",
    "PF-TLS-002": "SXM-IMAP-003",
    "PF-DST-001": "SXM-DST-001",
    "PF-DST-002": "SXM-DST-002",
}
_SSH_FINDING = {
    "SXM-SSH-001": "PF-SSH-001",
    "SXM-SSH-002": "PF-SSH-002",
    "SXM-SSH-003": "PF-SSH-003",
    "SXM-SSH-004": "PF-SSH-004",
}


def run_preflight(
    cfg: TenantConfig,
    discovery: Discovery | None = None,
    *,
    check_folders: bool = True,
    folder_check_limit: int | None = None,
    named: Sequence[str] = (),
    folders_checked_by_transfer: Collection[str] = (),
) -> PreflightReport:
    """Run every check; see the module docstring. Never raises for a finding.

    ``folders_checked_by_transfer``: keys of users whose folder names are not listed here (a
    login each) because their transfer refuses bad names itself (users an earlier run
    finished: a rerun does not log in to every one of them twice).

    ``named`` are the identities the run names its users by (``--user`` / ``users=[…]``): a
    user named by its primary address is exported under it, as with ``options.users.include``.
    Findings listed in ``preflight.accept`` come back marked ``accepted``.
    """
    report = _run_checks(
        cfg, discovery, check_folders, folder_check_limit, named, set(folders_checked_by_transfer)
    )
    if check_folders:
        known = {u.key for u in report.users}
        report.folders_left_to_transfer = frozenset(known & set(folders_checked_by_transfer))
    report.findings = accept_findings(report.findings, cfg.preflight.accept)
    return report


def accept_findings(findings: list[Finding], accept: Sequence[str]) -> list[Finding]:
    """Mark the findings the operator accepted (``CODE`` or ``CODE:user``), and log each."""
    whole = {a.strip().upper() for a in accept if ":" not in a}
    per_user = {
        (code.strip().upper(), user.strip().lower())
        for code, _, user in (a.partition(":") for a in accept if ":" in a)
    }
    out = []
    for f in findings:
        if f.code in whole or (f.code, (f.user or "").lower()) in per_user:
            log.warning("preflight %s accepted by preflight.accept: %s", f.code, f.message)
            f = replace(f, accepted=True)
        out.append(f)
    return out


def _run_checks(
    cfg: TenantConfig,
    discovery: Discovery | None,
    check_folders: bool,
    folder_check_limit: int | None,
    named: Sequence[str],
    folders_checked_by_transfer: set[str],
) -> PreflightReport:
    # The users given are checked even when a check ends preflight early (an SSH fault).
    report = PreflightReport(users=list(discovery.users) if discovery is not None else [])
    add = report.findings.extend
    add(tls_findings(cfg))
    add(concurrency_findings(cfg))
    try:
        with ScalixAdmin(cfg) as admin:
            if discovery is None:
                discovery = discover_users(cfg, admin=admin)
            add(session_findings(cfg, admin, discovery))
    except (FatalError, TransientError) as exc:
        add([finding(_SSH_FINDING.get(exc.code, "PF-SSH-001"), exc.message, remedy=exc.remedy)])
        return report
    except MigrationError as exc:
        add([finding("PF-SSH-005", exc.message)])
        return report
    report.users = list(discovery.users)
    add(discovery_findings(discovery))
    test_user, found = test_user_findings(cfg, discovery)
    # The admin's rights are proven by use first: the list was read and, when the test
    # mailbox opened without a finding, the mboxadmin login worked.
    opened = test_user is not None and not found
    add(admin_findings(cfg, discovery, mailbox_opened=opened))
    add(found)
    for user in discovery.users:
        add(user_findings(cfg, user, named=named))
    if check_folders:
        listed = [u for u in discovery.users if u.key not in folders_checked_by_transfer]
        if len(listed) < len(discovery.users):
            log.info(
                "folder names of %d finished user(s) are checked by their transfer, not here",
                len(discovery.users) - len(listed),
            )
        add(folder_findings(cfg, listed, limit=folder_check_limit))
    sample = test_user or (discovery.users[0] if discovery.users else None)
    add(destination_findings(cfg, sample, discovery.users))
    add(groupware_findings(cfg, sample))
    add(staging_findings(cfg, discovery.users))
    return report


# --- configuration-only checks -----------------------------------------------------------


def tls_findings(cfg: TenantConfig) -> list[Finding]:
    imap = cfg.source.imap
    if imap.tls is TLSMode.none:
        return [finding("PF-TLS-001", "source.imap.tls is none: mail crosses the network in clear")]
    if not imap.verify_certificate:
        return [finding("PF-TLS-001", "source.imap.verify_certificate is false")]
    return []


def concurrency_findings(
    cfg: TenantConfig, *, sessions_per_user: int = SOURCE_SESSIONS_PER_USER
) -> list[Finding]:
    """Configured concurrency against Scalix's limits (scalix.md §1.1)."""
    c = cfg.options.concurrency
    out = []
    if c.connections_per_server > SCALIX_CONNECTION_LIMIT:
        out.append(
            finding(
                "PF-CON-001",
                f"connections_per_server {c.connections_per_server} > {SCALIX_CONNECTION_LIMIT}",
            )
        )
    if c.connects_per_second > SCALIX_CONNECT_RATE_LIMIT:
        out.append(
            finding(
                "PF-CON-002",
                f"connects_per_second {c.connects_per_second:g} > {SCALIX_CONNECT_RATE_LIMIT:g}",
            )
        )
    if sessions_per_user > SCALIX_SIGNONS_PER_USER:
        out.append(
            finding(
                "PF-CON-003",
                f"{sessions_per_user} sessions per user > {SCALIX_SIGNONS_PER_USER}",
            )
        )
    if c.users * sessions_per_user > c.connections_per_server:
        out.append(
            finding(
                "PF-CON-004",
                f"{c.users} users in parallel need {c.users * sessions_per_user} connections, "
                f"connections_per_server is {c.connections_per_server}",
            )
        )
    return out


# --- admin-command checks ----------------------------------------------------------------


def session_findings(
    cfg: TenantConfig, admin: ScalixAdmin, discovery: Discovery | None = None
) -> list[Finding]:
    """Sessions open now (``omstat -u rci -c``), other than the admin's own."""
    result = admin.run("omstat_sessions")
    if not result.ok:
        return [
            finding(
                "PF-SSH-005",
                f"'{admin.command_line('omstat_sessions')}' exited {result.exit_status}: "
                f"{result.stderr.strip()[:300]}",
            )
        ]
    parsed = parse_sessions(result.stdout)
    out = [finding("PF-SSH-006", f"omstat_sessions: {line}") for line in parsed.unparsed]
    for s in parsed.sessions:
        if s.mentions(cfg.source.admin_user):
            continue
        who = s.raw.split("/")[0].strip() or s.raw
        user = discovery.find(who) if discovery is not None else None
        if user is not None:
            who = user.key
        out.append(finding("PF-SES-001", f"{s.client} session open: {s.raw}", user=who))
    return out


def discovery_findings(discovery: Discovery) -> list[Finding]:
    out = [finding("PF-SSH-006", line) for line in discovery.unparsed[:MAX_UNPARSED_FINDINGS]]
    if len(discovery.unparsed) > MAX_UNPARSED_FINDINGS:
        out.append(
            finding(
                "PF-SSH-006",
                f"… and {len(discovery.unparsed) - MAX_UNPARSED_FINDINGS} more lines not shown",
            )
        )
    keys = {u.name.lower(): u.key for u in discovery.all_users}
    for f in discovery.failures:
        out.append(
            finding(
                "PF-SSH-007",
                f"'{f.command}' exited {f.exit_status}: {f.stderr[:300]}",
                user=keys.get(f.user.lower(), f.user),
            )
        )
    out += [
        finding("PF-SEL-001", f"options.users.include {p!r} matched no user")
        for p in discovery.unmatched_includes
    ]
    if not discovery.users:
        out.append(finding("PF-SEL-002", "discovery selected no user"))
    return out


def admin_findings(
    cfg: TenantConfig, discovery: Discovery, *, mailbox_opened: bool = False
) -> list[Finding]:
    """Full administrator and mboxadmin: as printed by ``omshowu -n ADMIN -f``, else by use.

    How Scalix prints "Is full administrator" is not confirmed (scalix.md §2.1): an explicit
    "no" blocks; a capability list naming ``admin`` counts as yes; anything else is an unknown,
    reported as a warning with what the migration did prove (the user list was read, the test
    mailbox opened through mboxadmin). A missing ``mboxadmin`` blocks only when the mboxadmin
    login did not work either.
    """
    name = cfg.source.admin_user
    admin = discovery.find(name)
    if admin is None:
        return [finding("PF-ADM-001", f"admin user {name!r} is not in omshowu's list")]
    out = []
    evidence = _rights_evidence(discovery, mailbox_opened)
    if admin.full_admin is False:
        out.append(finding("PF-ADM-002", f"{admin.name} is not a full administrator"))
    elif admin.full_admin is None and "admin" not in admin.capabilities:
        shown = ", ".join(sorted(admin.capabilities)) or "none"
        out.append(
            finding(
                "PF-ADM-004",
                f"omshowu prints no full-administrator line for {admin.name} and its "
                f"capabilities ({shown}) do not include admin; proven by use: {evidence}",
            )
        )
    if "mboxadmin" in admin.capabilities:
        return out
    if mailbox_opened:
        out.append(
            finding(
                "PF-ADM-005",
                f"{admin.name}'s capabilities do not list mboxadmin; proven by use: {evidence}",
            )
        )
    else:
        bin_dir = cfg.source.ssh.bin_dir.rstrip("/")
        line = f"{bin_dir}/ommodu -o {shlex.quote(name)} -c +mboxadmin"
        out.append(
            finding(
                "PF-ADM-003",
                f"{admin.name} lacks the mboxadmin capability",
                remedy=f"As root on the Scalix host run: {line}",
            )
        )
    return out


def _rights_evidence(discovery: Discovery, mailbox_opened: bool) -> str:
    listed = len(discovery.all_users or discovery.users)
    opened = (
        "the test mailbox opened read-only through the mboxadmin login"
        if mailbox_opened
        else "the test mailbox did not open through the mboxadmin login"
    )
    return f"omshowu -m all listed {listed} user(s); {opened}"


def test_user_findings(
    cfg: TenantConfig, discovery: Discovery
) -> tuple[ScalixUser | None, list[Finding]]:
    """The test user exists, is named by its primary address, and opens read-only."""
    given = cfg.source.test_user
    user = discovery.find(given)
    if user is None:
        return None, [finding("PF-TST-001", f"test user {given!r} not found", user=given)]
    if (user.primary_address or "").lower() != given.lower():
        return user, [
            finding(
                "PF-TST-002",
                f"{given!r} is an alias of {user.name}, whose primary address is "
                f"{user.primary_address!r}",
                user=user.key,
                remedy=f"Set source.test_user: {user.primary_address}",
            )
        ]
    return user, probe_mailbox(cfg, user)


def probe_mailbox(cfg: TenantConfig, user: ScalixUser) -> list[Finding]:
    """mboxadmin login, LIST, EXAMINE INBOX, one header with BODY.PEEK: all read-only.

    The mailbox is opened as extract opens it (the user's context: same login name, quoting
    and connection), so what preflight proves is what extract will meet."""
    context = UserContext.of(cfg, user)
    try:
        with context.open_source() as mailbox:
            folders = mailbox.list_folders()
            client = mailbox.client
            info = client.select_folder("INBOX", readonly=True)
            if b"READ-ONLY" not in info:
                return [
                    finding("PF-TST-004", "EXAMINE INBOX did not open read-only", user=user.key)
                ]
            exists = int(info.get(b"EXISTS", 0))
            if exists:
                uids = client.search(["ALL"])
                got = client.fetch(uids[:1], ["BODY.PEEK[HEADER]"])
                if not got or not any(b"BODY[HEADER]" in v for v in got.values()):
                    return [finding("PF-TST-004", "no header came back", user=user.key)]
            log.info(
                "test mailbox %s: %d folders, INBOX %d messages",
                context.source_login,
                len(folders),
                exists,
            )
    except MigrationError as exc:
        return [_imap_error_finding(exc, user)]
    except (IMAPClientError, OSError) as exc:
        return [finding("PF-TST-004", f"{type(exc).__name__}: {plain_text(exc)}", user=user.key)]
    return []


def _imap_error_finding(exc: MigrationError, user: ScalixUser) -> Finding:
    if exc.code == "SXM-IMAP-002":
        return finding("PF-TST-003", exc.message, user=user.key)
    code = {
        "SXM-IMAP-001": "PF-IMAP-001",
        "SXM-IMAP-003": "PF-TLS-002",
        "SXM-IMAP-007": "PF-IMAP-001",
        "SXM-IMAP-008": "PF-IMAP-001",
        "SXM-IMAP-009": "PF-IMAP-001",
    }.get(exc.code, "PF-TST-004")
    # The error's remedy is the one for what happened (refused, dropped, silent, TLS).
    return finding(code, exc.message, user=user.key, remedy=exc.remedy)


def user_findings(
    cfg: TenantConfig, user: ScalixUser, *, named: Sequence[str] = ()
) -> list[Finding]:
    """Per-user facts from discovery: address, M0022, message store, lock."""
    out = []
    if not user.addresses:
        out.append(finding("PF-USR-002", f"{user.name} has no Internet Address", user=user.key))
    else:
        exported = _export_identity(cfg, user, named)
        if exported is not None and exported.lower() != user.addresses[0].lower():
            out.append(
                finding(
                    "PF-USR-001",
                    f"{user.name} is exported as {exported!r} but its primary (first) address "
                    f"is {user.addresses[0]!r}",
                    user=user.key,
                    remedy=f"In SAC move {exported} to the top of {user.name}'s addresses, "
                    f"or name the user by its primary address: --user {user.addresses[0]} "
                    "(users=[…]) or options.users.include",
                )
            )
    if user.has_message_store is False:
        out.append(finding("PF-USR-003", f"{user.name} has no message store", user=user.key))
    if user.locked:
        out.append(finding("PF-USR-004", f"{user.name}'s mail account is locked", user=user.key))
    return out


@functools.lru_cache(maxsize=4)
def _first_spelling(patterns: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    """Lower-cased pattern -> (position, spelling) of its first occurrence in ``patterns``."""
    first: dict[str, tuple[int, str]] = {}
    for i, pattern in enumerate(patterns):
        first.setdefault(pattern.lower(), (i, pattern))
    return first


def _export_identity(cfg: TenantConfig, user: ScalixUser, named: Sequence[str]) -> str | None:
    """The address the user is known by for export, when it is one of its addresses.

    That is the address the account was created with (its authentication ID, when that is an
    address of the user), or the address the operator named it by: in the run's users
    (``--user``, ``users=[…]``) or in ``options.users.include``.
    """
    lowered = {a.lower() for a in user.addresses}
    for patterns in (tuple(named), tuple(cfg.options.users.include)):
        first = _first_spelling(patterns)  # per user: a set lookup, not a pass over patterns
        candidates = sorted(first[a] for a in lowered if a in first)
        for _, pattern in candidates:
            if matches(user, pattern):
                return pattern
    if user.auth_id and user.auth_id.lower() in lowered:
        return user.auth_id
    return None


def folder_findings(
    cfg: TenantConfig, users: Iterable[ScalixUser], *, limit: int | None = None
) -> list[Finding]:
    """Folder names containing ``/`` or ``\\``, per user, over the mboxadmin login.

    ``\\`` is visible as such. ``/`` is Scalix's separator, so a name containing it shows up
    split into levels; Scalix folders are all selectable except the namespace roots, so a
    ``\\NoSelect`` level with children is reported as a name that contains ``/``.

    One login per user: as many users at once as the run migrates at once, through the
    source server's process-wide limiter (its connection cap and connects per second), so
    the check runs at the rate the operator allowed instead of one login's round trips at
    a time (the login is most of a preflight of many users). Findings in the users' order.
    """
    checked = [u for u in users if u.has_message_store is not False]
    if limit is not None:
        checked = checked[:limit]
    if not checked:
        return []
    conc = cfg.options.concurrency
    limiter = limiter_for(
        cfg.source.imap_host,
        connections=conc.connections_per_server,
        connects_per_second=min(conc.connects_per_second, SCALIX_CONNECT_RATE_LIMIT),
    )

    def check(user: ScalixUser) -> list[Finding]:
        try:
            with (
                limiter.connection(wait_s=cfg.source.imap.timeout_s * 10, user=user.key),
                UserContext.of(cfg, user).open_source() as mailbox,
            ):
                listing = mailbox.list_folders()
        except MigrationError as exc:
            return [finding("PF-USR-006", exc.message, user=user.key)]
        except (IMAPClientError, OSError) as exc:
            return [
                finding("PF-USR-006", f"{type(exc).__name__}: {plain_text(exc)}", user=user.key)
            ]
        return _bad_folder_names(user, listing)

    at_once = max(1, min(conc.users, conc.connections_per_server, len(checked)))
    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="preflight-folders") as pool:
        return [f for found in pool.map(check, checked) for f in found]


def _bad_folder_names(user: ScalixUser, listing: Sequence[SourceFolder]) -> list[Finding]:
    return [finding(FINDING_CODE, hint, user=user.key) for hint in bad_folder_names(listing)]
