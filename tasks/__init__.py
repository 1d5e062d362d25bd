"""Thin Prefect tasks: names, retries, artifacts. No protocol code lives here.

Each task calls one function of the Prefect-free core (``scalix_migrate.steps`` and friends)
and returns the core's frozen records (the preflight report, the transfer, groupware and
verify results, names), never clients, DataFrames or secrets: Prefect persists task results
(pickled), and the flow asks the records what happened. Artifacts are built from the same
records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.sync import concurrency
from prefect.runtime import task_run as task_run_runtime

from scalix_migrate import steps
from scalix_migrate.config import Phase, TenantConfig
from scalix_migrate.discovery import Discovery
from scalix_migrate.errors import is_retryable
from scalix_migrate.groupware_sync import GroupwareResult
from scalix_migrate.preflight import PreflightReport
from scalix_migrate.records import ScalixUser
from scalix_migrate.report import preflight_run_markdown, write_reports
from scalix_migrate.transfer import TransferResult
from scalix_migrate.verify import VerifyResult

# The decorators' retry settings are only what a task called on its own gets; the flow
# applies options.retries of the tenant config to every step (see for_config).
RETRY_DELAYS_S: list[float] = [2, 5, 15]


def retry_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only what a retry can cure: network, timeouts, throttling. Prefect asks only
    while retries are left, so a True here is a wait that follows: it is logged."""
    try:
        state.result()
    except BaseException as exc:
        retry = is_retryable(exc) or is_retryable(exc.__cause__ or exc)
        if retry:
            _log_retry(task, task_run, exc)
        return retry
    return False


def _log_retry(task: Task[Any, Any], task_run: TaskRun, exc: BaseException) -> None:
    delays = task.retry_delay_seconds
    done = max(1, task_run.run_count)
    if isinstance(delays, list | tuple) and delays:
        wait = float(delays[min(done - 1, len(delays) - 1)])
    else:
        wait = float(delays or 0)  # type: ignore[arg-type]
    code = getattr(exc, "code", type(exc).__name__)
    get_run_logger().warning(
        "%s: attempt %d failed (%s, transient: %s); retry %d of %d in %.0f s",
        task_run.name,
        done,
        code,
        getattr(exc, "message", str(exc))[:300],
        done,
        task.retries,
        wait,
    )


def _count_retry(config: TenantConfig, user: ScalixUser, step: str) -> None:
    attempt = task_run_runtime.run_count
    if attempt > 1:  # Prefect counts runs from 1; run 2 is the first retry
        steps.note_retry(config, user, step, attempt)


def retry_policy(config: TenantConfig) -> tuple[int, list[float]]:
    """options.retries as Prefect wants it: how many retries, and the waits before them."""
    return config.options.retries.attempts, list(config.options.retries.delays_s)


@dataclass(frozen=True)
class Steps:
    """The flow's tasks with the tenant's retry policy applied (see :func:`for_config`)."""

    discover_users: Task[[TenantConfig], Discovery]
    preflight_validate: Task[[TenantConfig, Discovery, list[str] | None], PreflightReport]
    restart_service: Task[[TenantConfig, list[ScalixUser], bool], list[str]]
    let_users_in: Task[[TenantConfig], list[str]]
    transfer_user: Task[[TenantConfig, ScalixUser, Phase, bool], TransferResult]
    groupware_user: Task[[TenantConfig, ScalixUser], GroupwareResult]
    verify_user: Task[[TenantConfig, ScalixUser], VerifyResult]


def for_config(config: TenantConfig) -> Steps:
    """Every step with ``options.retries``: the decorators' settings are only defaults."""
    attempts, delays = retry_policy(config)
    opts: dict[str, Any] = {"retries": attempts, "retry_delay_seconds": delays}
    return Steps(
        discover_users=discover_users.with_options(**opts),
        preflight_validate=preflight_validate.with_options(**opts),
        restart_service=restart_service.with_options(**opts),
        let_users_in=let_users_in.with_options(**opts),
        transfer_user=transfer_user.with_options(**opts),
        groupware_user=groupware_user.with_options(**opts),
        verify_user=verify_user.with_options(**opts),
    )


def source_limit_name(config: TenantConfig) -> str:
    """The global concurrency limit shared by every run that reads this Scalix server."""
    host = re.sub(r"[^a-z0-9]+", "-", config.source.imap_host.lower()).strip("-")
    return f"scalix-source-{host}"


def ensure_source_limit(config: TenantConfig) -> str:
    """Create (or resize) the source server's limit: connections_per_server slots."""
    name = source_limit_name(config)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(
            name, config.options.concurrency.connections_per_server
        )
    return name


def users_at_once(config: TenantConfig) -> int:
    """Users a run migrates at once: one source connection each, within the source's cap."""
    conc = config.options.concurrency
    return min(conc.users, conc.connections_per_server)


@contextmanager
def source_slots(config: TenantConfig, users: int) -> Iterator[None]:
    """Hold one slot of the source server's limit per user this run has in flight.

    Taken once for the run, not per user: acquiring a lease per task cost about a third of
    a small user's task time (profiled; two API calls and a lease renewal each). The limit
    still counts every run and worker that reads this Scalix server."""
    occupy = max(1, min(users, users_at_once(config)))
    with concurrency(source_limit_name(config), occupy=occupy, strict=True):
        yield


def artifact_key(tenant: str, what: str) -> str:
    """Artifact keys must be lowercase letters, digits and dashes."""
    return f"{tenant}-{what}".lower()


@task(
    name="discover-users",
    retries=3,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    task_run_name="discover-users-{config.tenant}",
)
def discover_users(config: TenantConfig) -> Discovery:
    """The users of the configured server names (records only: no connection escapes)."""
    return steps.discover_step(config)


@task(
    name="preflight-validate",
    retries=2,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    task_run_name="preflight-{config.tenant}",
)
def preflight_validate(
    config: TenantConfig, discovery: Discovery, named: list[str] | None = None
) -> PreflightReport:
    """Run every check on the selected users; returns the report.

    The findings are kept in the journal under this flow run (id and name); the artifacts
    show this run's findings, from the report itself.
    """
    from prefect.runtime import flow_run

    report = steps.preflight_step(
        config,
        discovery,
        named=named or [],
        run_id=str(flow_run.id) if flow_run.id else None,
        run_name=flow_run.name or None,
        recheck_finished_users=False,
    )
    create_table_artifact(
        key=artifact_key(config.tenant, "preflight"),
        table=report.to_rows()
        or [{"severity": "", "code": "", "user": "", "message": "no findings"}],
        description="Preflight findings (blocking ones stop the run before anything moves)",
    )
    create_markdown_artifact(
        key=artifact_key(config.tenant, "preflight-summary"),
        markdown=preflight_run_markdown(
            report, run=flow_run.name or str(flow_run.id), at=datetime.now(UTC)
        ),
    )
    return report


@task(
    name="restart-service",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    task_run_name="restart-service-{config.tenant}",
)
def restart_service(config: TenantConfig, users: list[ScalixUser], dry_run: bool) -> list[str]:
    return steps.restart_service_step(config, users, dry_run=dry_run)


@task(
    name="let-users-in",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    task_run_name="let-users-in-{config.tenant}",
)
def let_users_in(config: TenantConfig) -> list[str]:
    return steps.let_users_in_step(config)


@task(
    name="transfer-user",
    retries=3,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    task_run_name="transfer-{user.key}",
)
def transfer_user(
    config: TenantConfig, user: ScalixUser, phase: Phase, check_folder_names: bool = False
) -> TransferResult:
    """Extract the user's mailbox and load it while it is read (one task: both run at once).

    A retry resumes both from the journal: nothing is fetched or appended twice. The source
    connection it opens is counted in the run's slots of the source limit
    (:func:`source_slots`). ``check_folder_names``: preflight left the user's folder names
    to this step (a user an earlier run finished)."""
    _count_retry(config, user, "transfer")
    return steps.transfer_step(config, user, phase=phase, check_folder_names=check_folder_names)


@task(
    name="groupware-user",
    retries=3,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    task_run_name="groupware-{user.key}",
)
def groupware_user(config: TenantConfig, user: ScalixUser) -> GroupwareResult:
    """Calendar and contact items into CalDAV/CardDAV (or files), written and verified."""
    _count_retry(config, user, "groupware")
    return steps.groupware_step(config, user)


@task(
    name="verify-user",
    retries=2,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    task_run_name="verify-{user.key}",
)
def verify_user(config: TenantConfig, user: ScalixUser) -> VerifyResult:
    _count_retry(config, user, "verify")
    return steps.verify_step(config, user)


@task(name="report", cache_policy=NO_CACHE, task_run_name="report-{config.tenant}")
def build_report(config: TenantConfig) -> str:
    """Write the report files and publish the users table and summary as artifacts."""
    with steps.journal_for(config) as journal:
        files = write_reports(journal, config.tenant, config.options.reports_dir)
    create_table_artifact(
        key=artifact_key(config.tenant, "users"),
        table=files.users or [{}],
        description="Per-user results",
    )
    create_markdown_artifact(
        key=artifact_key(config.tenant, "summary"),
        markdown=files.summary + f"\nReport files: `{files.directory}`\n",
    )
    return str(files.directory)
