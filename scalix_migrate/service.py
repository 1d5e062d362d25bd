"""restart-service: keep users out, restart Scalix, wait until healthy, always let users back in.

Order (one SSH connection, every command logged and journalled):

1. lock-out before the restart — ``services``: stop ``scalix-tomcat`` (webmail, mobile, Platform
   API) when it runs; ``accounts``: lock each selected user whose account is unlocked; ``none``;
2. the restart (``service.restart_command``) when ``service.restart`` is on, at most
   ``service.restart_attempts`` times, each followed by a wait until ``omstat -a`` shows every
   service Enabled or Started (backoff, bounded by ``service.healthy_timeout_s``); on timeout the
   error names the services still down;
3. lock-out after the restart (a restart brings every service back) — ``services``: ``omoff``
   the services users reach (POP3, RCI/Outlook) that run, keeping IMAP for the mboxadmin login;
4. the sessions still open (``omstat -u rci -c``) other than the admin's own are returned.

Every change is recorded with ``Journal.record_change`` (with its rendered undo command)
*before* it is made, and marked undone after its undo succeeded; :class:`UsersKeptOut`
undoes them on exit whatever happened, and :func:`unlock` undoes whatever is still pending after
a crash of the whole process. Undo is idempotent. Command templates: see
:data:`scalix_migrate.scalix.admin.DEFAULT_TEMPLATES`; ``service.commands`` overrides them here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import FatalError, TransientError
from scalix_migrate.records import ScalixUser
from scalix_migrate.scalix.admin import CommandResult, ScalixAdmin
from scalix_migrate.scalix.parsers import Session, parse_service_status, parse_sessions
from scalix_migrate.state import Journal

log = logging.getLogger(__name__)

# The services users reach directly; IMAP stays up for the migrator's mboxadmin login.
USER_FACING_SERVICES = ("pop3", "rci")
SSH_ATTEMPTS = 3
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 15.0
T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """One change to the Scalix host and the command line that undoes it."""

    kind: str  # "tomcat-stopped" | "service-stopped" | "account-locked"
    target: str
    do: str
    undo: str


@dataclass(frozen=True)
class Outcome:
    changes: list[Change]
    restarts: int
    foreign_sessions: list[Session] = field(default_factory=list)


def make_admin(cfg: TenantConfig, journal: Journal | None) -> ScalixAdmin:
    admin = ScalixAdmin(cfg, journal=journal)
    admin.templates.update(cfg.service.commands)
    return admin


def _retry(admin: ScalixAdmin, fn: Callable[[], T], what: str) -> T:
    """Run ``fn``, reconnecting after transient SSH errors, at most SSH_ATTEMPTS times."""
    delay = BACKOFF_START_S
    for attempt in range(1, SSH_ATTEMPTS + 1):
        try:
            return fn()
        except TransientError as exc:
            if attempt == SSH_ATTEMPTS:
                raise
            log.warning("%s: %s; retrying (%d/%d)", what, exc.message, attempt, SSH_ATTEMPTS)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
            admin.close()
    raise AssertionError("unreachable")


def _run(admin: ScalixAdmin, line: str) -> CommandResult:
    return _retry(admin, lambda: admin.run_line(line), line)


# --- planning ------------------------------------------------------------------------------


def lockout_before(
    cfg: TenantConfig, admin: ScalixAdmin, users: Sequence[ScalixUser]
) -> list[Change]:
    if cfg.service.lockout == "services":
        return [
            Change(
                "tomcat-stopped",
                "scalix-tomcat",
                admin.command_line("tomcat_stop"),
                admin.command_line("tomcat_start"),
            )
        ]
    if cfg.service.lockout == "accounts":
        return [
            Change(
                "account-locked",
                u.name,
                admin.command_line("ommodu_lock", name=u.name),
                admin.command_line("ommodu_unlock", name=u.name),
            )
            for u in users
            if not u.locked  # an account locked before we came stays locked afterwards
        ]
    return []


def lockout_after(cfg: TenantConfig, admin: ScalixAdmin) -> list[Change]:
    if cfg.service.lockout != "services":
        return []
    return [
        Change(
            "service-stopped",
            svc,
            admin.command_line("omoff", service=svc),
            admin.command_line("omon", service=svc),
        )
        for svc in USER_FACING_SERVICES
    ]


def plan_commands(cfg: TenantConfig, users: Sequence[ScalixUser]) -> list[str]:
    """Dry run: every command the step would run, in order (undo last). Connects to nothing."""
    admin = make_admin(cfg, None)
    before, after = lockout_before(cfg, admin, users), lockout_after(cfg, admin)
    lines: list[str] = []
    if cfg.service.lockout == "services":
        lines.append(admin.command_line("tomcat_status"))
    lines += [c.do for c in before]
    if cfg.service.restart:
        lines += [admin.wrap(cfg.service.restart_command), admin.command_line("omstat_all")]
    if after:
        lines.append(admin.command_line("omstat_all"))
    lines += [c.do for c in after]
    lines.append(admin.command_line("omstat_sessions"))
    lines += [c.undo for c in reversed([*before, *after])]
    return lines


# --- doing ---------------------------------------------------------------------------------


def _apply(admin: ScalixAdmin, journal: Journal, tenant: str, change: Change) -> None:
    journal.record_change(tenant, change.kind, change.target, change.undo)
    result = _run(admin, change.do)
    if not result.ok:
        raise FatalError(
            f"'{change.do}' exited {result.exit_status}: {result.stderr.strip()[:300]}",
            code="SXM-SVC-002",
        )


def _tomcat_running(admin: ScalixAdmin) -> bool:
    return _run(admin, admin.command_line("tomcat_status")).exit_status == 0


def _running_services(admin: ScalixAdmin) -> set[str]:
    result = _run(admin, admin.command_line("omstat_all"))
    return {s.name.lower() for s in parse_service_status(result.stdout).services if s.healthy}


def wait_healthy(cfg: TenantConfig, admin: ScalixAdmin, *, timeout_s: float | None = None) -> None:
    """Poll ``omstat -a`` with backoff until every service is Enabled/Started, or raise
    FatalError SXM-SVC-001 naming the services still down."""
    timeout = cfg.service.healthy_timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout
    delay = BACKOFF_START_S
    down: list[str] = ["(omstat -a printed no service)"]
    while True:
        result = _run(admin, admin.command_line("omstat_all"))
        status = parse_service_status(result.stdout)
        if result.ok and status.services:
            down = [f"{s.name} ({s.state})" for s in status.down()]
            if not down:
                return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FatalError(
                f"after {timeout:.0f}s these Scalix services are still down: {', '.join(down)}",
                code="SXM-SVC-001",
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, BACKOFF_MAX_S)


def restart(cfg: TenantConfig, admin: ScalixAdmin) -> int:
    """Run the restart command and wait until healthy, at most ``restart_attempts`` times."""
    line = admin.wrap(cfg.service.restart_command)
    last: FatalError | None = None
    for attempt in range(1, cfg.service.restart_attempts + 1):
        try:
            result = admin.run_line(line)  # not retried: a repeat is a new attempt
        except TransientError as exc:
            last = FatalError(
                f"'{line}' lost its SSH connection: {exc.message}", code="SXM-SVC-003"
            )
            admin.close()
            continue
        if not result.ok:
            last = FatalError(
                f"'{line}' exited {result.exit_status}: {result.stderr.strip()[:300]}",
                code="SXM-SVC-003",
            )
            continue
        try:
            wait_healthy(cfg, admin)
            return attempt
        except FatalError as exc:
            last = exc
            log.warning("restart attempt %d/%d: %s", attempt, cfg.service.restart_attempts, exc)
    assert last is not None
    raise last


def foreign_sessions(cfg: TenantConfig, admin: ScalixAdmin) -> list[Session]:
    """Sessions open now, other than the admin's own."""
    result = _run(admin, admin.command_line("omstat_sessions"))
    return [
        s for s in parse_sessions(result.stdout).sessions if not s.mentions(cfg.source.admin_user)
    ]


def prepare(
    cfg: TenantConfig, journal: Journal, users: Sequence[ScalixUser], admin: ScalixAdmin
) -> Outcome:
    """Steps 1–4 of the module docstring. Changes stay recorded if this raises midway."""
    tenant = cfg.tenant
    changes: list[Change] = []
    for change in lockout_before(cfg, admin, users):
        if change.kind == "tomcat-stopped" and not _tomcat_running(admin):
            continue  # stopped before we came: leave it stopped afterwards too
        _apply(admin, journal, tenant, change)
        changes.append(change)
    restarts = restart(cfg, admin) if cfg.service.restart else 0
    after = lockout_after(cfg, admin)
    if after:
        running = _running_services(admin)
        for change in after:
            if not _alias_running(change.target, running):
                continue
            _apply(admin, journal, tenant, change)
            changes.append(change)
    sessions = foreign_sessions(cfg, admin)
    for s in sessions:
        log.warning("session still open before extraction: %s", s.raw)
    return Outcome(changes, restarts, sessions)


_ALIASES = {"pop3": "pop3 interface", "rci": "remote client interface", "imap": "imap server"}


def _alias_running(alias: str, running: set[str]) -> bool:
    return _ALIASES.get(alias.lower(), alias.lower()) in running


def unlock(cfg: TenantConfig, journal: Journal, *, admin: ScalixAdmin | None = None) -> list[str]:
    """Undo every pending change of the tenant, newest first; idempotent.

    Returns the undo commands run. Tries them all, then raises FatalError SXM-SVC-002 listing
    those that failed (they stay pending for the next ``unlock``).
    """
    pending = journal.pending_undos(cfg.tenant)
    if not pending:
        return []
    own = admin is None
    admin = admin or make_admin(cfg, journal)
    done: list[str] = []
    failed: list[str] = []
    try:
        for row in pending:
            line = row.undo_command
            try:
                result = _run(admin, line)
            except TransientError as exc:
                failed.append(f"{line} ({exc.message})")
                continue
            if result.ok:
                journal.mark_undone(row.id)
                done.append(line)
            else:
                failed.append(f"{line} (exit {result.exit_status}: {result.stderr.strip()[:200]})")
    finally:
        if own:
            admin.close()
    if failed:
        raise FatalError(f"could not undo: {'; '.join(failed)}", code="SXM-SVC-002")
    return done


class UsersKeptOut:
    """``with UsersKeptOut(cfg, journal, users) as outcome: <migrate>`` — let users back in on
    exit whatever happened. An undo failure is raised only when the body succeeded (else it is
    logged and the body's exception goes on); the journal keeps it pending for ``unlock``."""

    def __init__(
        self,
        cfg: TenantConfig,
        journal: Journal,
        users: Sequence[ScalixUser],
        *,
        admin: ScalixAdmin | None = None,
    ) -> None:
        self.cfg, self.journal, self.users = cfg, journal, users
        self._own = admin is None
        self.admin = admin or make_admin(cfg, journal)
        self.outcome: Outcome | None = None

    def __enter__(self) -> Outcome:
        try:
            self.admin.connect()
            self.outcome = prepare(self.cfg, self.journal, self.users, self.admin)
        except BaseException:
            self._undo(raise_errors=False)
            raise
        return self.outcome

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._undo(raise_errors=exc is None)

    def _undo(self, *, raise_errors: bool) -> None:
        try:
            unlock(self.cfg, self.journal, admin=self.admin)
        except FatalError as err:
            if raise_errors:
                raise
            log.error("letting users back in failed: %s", err)
        finally:
            if self._own:
                self.admin.close()
