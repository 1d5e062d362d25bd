"""The migration procedure's steps as plain functions, one call per step and user.

The Prefect tasks in ``tasks/`` are thin wrappers around these; the CLI and the tests can call
them without Prefect. Each step opens what it needs (journal, connections) and closes it again:
nothing live crosses a step boundary, only the config and user records. Every user step
records its outcome in the journal (status, error code, timings) before it returns or raises,
so ``only_failed`` reruns and the reports read the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from scalix_migrate import service
from scalix_migrate.config import Phase, TenantConfig
from scalix_migrate.discovery import Discovery, UserPatterns, discover_users
from scalix_migrate.errors import MigrationError, TransientError, UserError
from scalix_migrate.extract import ExtractResult, extract_user
from scalix_migrate.groupware_sync import GroupwareResult, require_verified, sync_user
from scalix_migrate.load import LoadResult, load_user
from scalix_migrate.netfaults import counting
from scalix_migrate.preflight import Finding, PreflightReport, run_preflight
from scalix_migrate.records import ScalixUser
from scalix_migrate.report import write_preflight_files
from scalix_migrate.state import Journal, UserStatus
from scalix_migrate.transfer import TransferResult, transfer_user
from scalix_migrate.verify import VerifyResult, verify_user

log = logging.getLogger(__name__)

T = TypeVar("T")


def open_journal(cfg: TenantConfig) -> Journal:
    """The tenant's journal, shared by every step of this process (not to be closed)."""
    return Journal.shared(url=cfg.options.state.url, directory=cfg.options.state.dir)


@contextmanager
def journal_for(cfg: TenantConfig) -> Iterator[Journal]:
    # A context manager for the callers' shape; the shared journal stays open after it.
    yield open_journal(cfg)


def _now() -> datetime:
    return datetime.now(UTC)


# The statuses an ``only_failed`` rerun picks up: every user a run left unfinished. Users in
# a running state belong to the run migrating them (waves); ``pending`` ones were never tried.
RERUN_STATUSES = (UserStatus.failed, UserStatus.excluded, UserStatus.paused)


def select_users(
    cfg: TenantConfig,
    discovered: Sequence[ScalixUser],
    *,
    users: Sequence[str] | None = None,
    only_failed: bool = False,
) -> tuple[list[ScalixUser], list[str]]:
    """Narrow the discovered users (the config's include/exclude already applied) to the
    run's ``users`` and/or the users the journal shows unfinished (failed, excluded by
    preflight, paused by the byte budget).

    Returns the selected users and the requested names that matched nobody (an operator's
    typo must not pass silently).
    """
    selected = list(discovered)
    unknown: list[str] = []
    if users:
        wanted = UserPatterns(users)
        hits = [(u, wanted.hits(u)) for u in selected]
        found = {name for _, names in hits for name in names}
        unknown = [name for name in users if name not in found]
        selected = [u for u, names in hits if names]
    if only_failed:
        unfinished = rerun_candidates(cfg)
        selected = [u for u in selected if u.key in unfinished]
    return selected, unknown


def rerun_candidates(cfg: TenantConfig) -> dict[str, UserStatus]:
    """User key -> status, for every user an ``only_failed`` rerun picks up."""
    with journal_for(cfg) as journal:
        return {
            r.user_key: r.status
            for r in journal.user_rows(cfg.tenant)
            if r.status in RERUN_STATUSES
        }


@dataclass(frozen=True)
class Exclusions:
    """The users a run's preflight left out, as :func:`record_exclusions` recorded them."""

    findings: Mapping[str, Finding]  # user key -> the finding that left the user out
    already_done: tuple[str, ...] = ()  # of those, the keys an earlier run had migrated

    @property
    def keys(self) -> list[str]:
        return sorted(self.findings)

    def describe(self) -> str:
        """``key (CODE: remedy); …`` for the run's log."""
        return "; ".join(f"{k} ({f.code}: {f.remedy})" for k, f in sorted(self.findings.items()))


def record_exclusions(cfg: TenantConfig, report: PreflightReport) -> Exclusions:
    """Mark the users ``report`` leaves out ``excluded``, with the finding's code and remedy.

    A user already ``done`` keeps its status: its mail is at the destination, and the
    finding stays in the preflight history (listed in ``already_done``). The journal is
    not touched when preflight left nobody out.
    """
    left_out = report.left_out
    if not left_out:
        return Exclusions({})
    already_done: list[str] = []
    with journal_for(cfg) as journal:
        status = {r.user_key: r.status for r in journal.user_rows(cfg.tenant)}
        for key, f in left_out.items():
            if status.get(key) == UserStatus.done:
                already_done.append(key)
                continue
            journal.set_user_status(
                cfg.tenant,
                key,
                UserStatus.excluded,
                error_code=f.code,
                error_message=f"excluded by preflight: {f.message}; remedy: {f.remedy}",
            )
    return Exclusions(left_out, tuple(sorted(already_done)))


def discover_step(cfg: TenantConfig) -> Discovery:
    """Discover the users and record them in the journal."""
    with journal_for(cfg) as journal:
        discovery = discover_users(cfg, journal=journal)
        journal.upsert_users(cfg.tenant, discovery.users)
    return discovery


def preflight_step(
    cfg: TenantConfig,
    discovery: Discovery,
    *,
    named: Sequence[str] = (),
    run_id: str | None = None,
    run_name: str | None = None,
    recheck_finished_users: bool = True,
) -> PreflightReport:
    """Every preflight check for ``discovery.users``; the report.

    ``recheck_finished_users=False`` (a migration run): the folder names of users the journal
    has as done are left to their transfer, which refuses bad names itself
    (:func:`scalix_migrate.extract.refuse_bad_folder_names`): one login per finished user
    fewer on a rerun.

    The findings are kept in the journal under ``run_id`` (the flow run, or ``cli-<time>``)
    and the report files (``preflight.csv``: every run's findings; ``preflight.md``) are
    rewritten from that history. ``named``: the run's ``users`` (a user named by its
    primary address is exported under it).
    """
    finished: set[str] = set()
    if not recheck_finished_users:
        with journal_for(cfg) as journal:
            finished = set(journal.users_with_status(cfg.tenant, UserStatus.done))
    report = run_preflight(cfg, discovery, named=named, folders_checked_by_transfer=finished)
    at = _now()
    with journal_for(cfg) as journal:
        journal.record_preflight(
            cfg.tenant,
            run_id or f"cli-{at:%Y%m%dT%H%M%SZ}",
            report.to_rows(),
            run_name=run_name,
            at=at,
        )
        write_preflight_files(journal.preflight_history(cfg.tenant), cfg.options.reports_dir)
    return report


def run_user_step(
    cfg: TenantConfig,
    user: ScalixUser,
    step: str,
    body: Callable[[Journal], T],
    *,
    running: UserStatus,
    done: UserStatus,
    started_col: str | None = None,
    finished_col: str | None = None,
    release: bool = False,
) -> T:
    """Run one user step with status bookkeeping: running -> done, or failed with its code.

    The step claims the user in the journal first, so two workers (overlapping waves of one
    tenant) never migrate the same user at once; the claim is released when the user fails
    or its last step (``release=True``) is done.
    """
    with journal_for(cfg) as journal:
        holder = journal.claim_user(cfg.tenant, user.key)
        if holder is not None:
            # Another worker migrates this user right now (overlapping waves): leave it be.
            raise UserError(
                f"{step}: the user is being migrated by {holder}",
                code="SXM-USR-003",
                user=user.key,
            )
        stamps: dict[str, Any] = {started_col: _now()} if started_col else {}
        journal.set_user_status(cfg.tenant, user.key, running, **stamps)
        try:
            with counting() as tally:
                try:
                    result = body(journal)
                finally:
                    _record_faults(cfg, journal, user, step, tally.reconnects)
        except MigrationError as exc:
            if isinstance(exc, TransientError):
                # Logged here, where the user is known; the retry itself is counted when it
                # starts (note_retry), so a user that ran out of retries is not over-counted.
                log.warning("%s %s: transient fault %s: %s", step, user.key, exc.code, exc.message)
            journal.release_user(cfg.tenant, user.key)
            journal.set_user_status(
                cfg.tenant,
                user.key,
                UserStatus.failed,
                error_code=exc.code,
                error_message=f"{step}: {exc.message}{_item_of(exc)}",
            )
            raise
        except Exception as exc:
            # Unexpected: record it (type only: messages of foreign exceptions may carry data)
            # and surface it as a user failure so the tenant goes on.
            journal.release_user(cfg.tenant, user.key)
            journal.set_user_status(
                cfg.tenant,
                user.key,
                UserStatus.failed,
                error_code="SXM-RUN-001",
                error_message=f"{step}: {type(exc).__name__}",
            )
            raise UserError(
                f"{step} failed unexpectedly ({type(exc).__name__})", user=user.key
            ) from exc
        stamps = {finished_col: _now()} if finished_col else {}  # same type as above
        journal.set_user_status(cfg.tenant, user.key, done, **stamps)
        if release:
            journal.release_user(cfg.tenant, user.key)
        return result


def _item_of(exc: MigrationError) -> str:
    """`` (folder=…, uid=…)`` for the report: which item the user failed on."""
    where = ", ".join(
        f"{k}={v}" for k, v in (("folder", exc.folder), ("uid", exc.uid)) if v is not None
    )
    return f" ({where})" if where else ""


def note_retry(cfg: TenantConfig, user: ScalixUser, step: str, attempt: int) -> None:
    """A step of ``user`` starts again after a transient fault: count it (users.retries)."""
    log.warning("%s %s: attempt %d (a retry after a transient fault)", step, user.key, attempt)
    with journal_for(cfg) as journal:
        journal.add_user_faults(cfg.tenant, user.key, retries=1)


def _record_faults(
    cfg: TenantConfig, journal: Journal, user: ScalixUser, step: str, reconnects: int
) -> None:
    if reconnects:
        log.warning("%s %s: %d lost connection(s) reopened", step, user.key, reconnects)
        journal.add_user_faults(cfg.tenant, user.key, reconnects=reconnects)


def extract_step(
    cfg: TenantConfig, user: ScalixUser, *, phase: Phase = Phase.full
) -> ExtractResult:
    result = run_user_step(
        cfg,
        user,
        "extract",
        lambda j: extract_user(cfg, j, user, phase=phase),
        running=UserStatus.extracting,
        done=UserStatus.extracted,
        started_col="extract_started",
        finished_col="extract_finished",
    )
    return result


def load_step(cfg: TenantConfig, user: ScalixUser) -> LoadResult:
    result = run_user_step(
        cfg,
        user,
        "load",
        lambda j: load_user(cfg, j, user),
        running=UserStatus.loading,
        done=UserStatus.loaded,
        started_col="load_started",
        finished_col="load_finished",
    )
    if result.stopped_code:
        with journal_for(cfg) as journal:
            _pause(journal, cfg, user, result.stopped_code)
    return result


def _pause(journal: Journal, cfg: TenantConfig, user: ScalixUser, code: str) -> None:
    """A clean stop (the daily byte budget): the user resumes in the next run."""
    journal.release_user(cfg.tenant, user.key)
    journal.set_user_status(
        cfg.tenant,
        user.key,
        UserStatus.paused,
        error_code=code,
        error_message="daily byte budget reached; resumes in the next run",
    )


def transfer_step(
    cfg: TenantConfig,
    user: ScalixUser,
    *,
    phase: Phase = Phase.full,
    check_folder_names: bool = False,
) -> TransferResult:
    """Extract and load at once (:mod:`scalix_migrate.transfer`); the results of both.
    ``check_folder_names``: the user is in the preflight report's ``folders_left_to_transfer``.
    """
    now = _now()
    result = run_user_step(
        cfg,
        user,
        "transfer",
        lambda j: transfer_user(cfg, j, user, phase=phase, check_folder_names=check_folder_names),
        running=UserStatus.transferring,
        done=UserStatus.loaded,
        started_col="extract_started",
        finished_col="load_finished",
    )
    with journal_for(cfg) as journal:
        journal.set_user_status(
            cfg.tenant,
            user.key,
            UserStatus.loaded,
            load_started=now,  # the load starts with the extract and follows it
            extract_finished=result.extract_finished,
        )
        if result.load.stopped_code:
            _pause(journal, cfg, user, result.load.stopped_code)
    return result


def verify_step(cfg: TenantConfig, user: ScalixUser) -> VerifyResult:
    """Verify the user's destination against the ledger; a mismatch fails the user."""

    def body(journal: Journal) -> VerifyResult:
        result = verify_user(cfg, journal, user)
        if not result.ok:
            raise UserError(
                f"verification found {len(result.differences)} difference(s)",
                code="SXM-DST-008",
                user=user.key,
            )
        return result

    return run_user_step(
        cfg,
        user,
        "verify",
        body,
        running=UserStatus.verifying,
        done=UserStatus.done,
        release=True,
    )


def groupware_step(cfg: TenantConfig, user: ScalixUser) -> GroupwareResult:
    """Calendars and address books (destination.calendar/contacts), written and verified."""

    def body(journal: Journal) -> GroupwareResult:
        result = sync_user(cfg, journal, user)
        require_verified(result)
        return result

    return run_user_step(
        cfg, user, "groupware", body, running=UserStatus.groupware, done=UserStatus.loaded
    )


def restart_service_step(
    cfg: TenantConfig, users: Sequence[ScalixUser], *, dry_run: bool = False
) -> list[str]:
    """Keep users out and restart Scalix (opt-in: ``service.restart``).

    Returns the command lines run (or, in a dry run, those that would run). The changes are in
    the journal; :func:`let_users_in_step` undoes them.
    """
    if not cfg.service.restart:
        return []
    if dry_run:
        return service.plan_commands(cfg, users)
    with journal_for(cfg) as journal:
        admin = service.make_admin(cfg, journal)
        with admin:
            outcome = service.prepare(cfg, journal, users, admin)
    return [c.do for c in outcome.changes]


def let_users_in_step(cfg: TenantConfig) -> list[str]:
    """Undo every pending restart-service change of the tenant (idempotent)."""
    with journal_for(cfg) as journal:
        if not journal.pending_undos(cfg.tenant):
            return []
        return service.unlock(cfg, journal)
