"""The migration procedure for one tenant, as one Prefect flow run.

discover-users -> preflight-validate -> restart-service -> per user: transfer (extract, and
load while it runs) -> [groupware, when destination.calendar/contacts is set] -> verify ->
report. Read it top to bottom; the work is in ``tasks/`` and the core. The tasks return the
core's records (the preflight report, the transfer result…) and the flow asks them what
happened.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.futures import PrefectFuture
from prefect.results import ResultRecord  # type: ignore[attr-defined]  # as prefect.states does
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

import tasks
from flows.quiet_failure import quiet_designed_failures
from scalix_migrate import steps
from scalix_migrate.config import Phase, TenantConfig
from scalix_migrate.memory import Trimmer
from scalix_migrate.records import ScalixUser
from scalix_migrate.transfer import TransferResult

# The pool only bounds threads; how many users run at once is options.concurrency.users,
# enforced by the sliding window below (a flow's pool size cannot come from a parameter).
MAX_POOL = 64 * 3
POLL_S = 1.0
PROGRESS_EVERY_S = 1.0


def _let_users_in_hook(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Whatever ended the run, users get back in (undo is idempotent)."""
    config = flow_run.parameters.get("config")
    if config is None:
        return
    steps.let_users_in_step(TenantConfig.model_validate(config))


def _value_of(state: State[Any]) -> Any:
    """A completed task run's return value, from memory when the state holds it.

    ``State.result()`` hands even an in-memory result to Prefect's event-loop thread and
    waits for it: ~90 ms a call on a busy run (py-spy, 30 users), two calls per user, all
    on the flow's one thread. A result that only lives in storage is read the documented way.
    """
    if isinstance(state.data, ResultRecord):
        return state.data.result
    return state.result()


def _run_name() -> str:
    """``migrate-<tenant>-<phase>[-only-failed|-N-users]-<start, UTC>``: runs told apart."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    config = params.get("config")
    tenant = config.tenant if isinstance(config, TenantConfig) else dict(config or {}).get("tenant")
    parts = ["migrate", str(tenant), str(params.get("phase", "full"))]
    if params.get("dry_run"):
        parts.append("dry-run")
    if params.get("only_failed"):
        parts.append("only-failed")
    if params.get("users"):
        parts.append(f"{len(params['users'])}-users")
    parts.append(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return "-".join(parts)


@dataclass
class _UserRun:
    """Where one user is in its chain of steps."""

    user: ScalixUser
    future: PrefectFuture[Any]
    step: int = 0
    results: dict[str, Any] = field(default_factory=dict)  # step name -> its task's record

    @property
    def paused(self) -> bool:
        """The transfer stopped cleanly at the daily byte budget: no further step now."""
        transfer = self.results.get("transfer")
        return isinstance(transfer, TransferResult) and transfer.load.stopped_code is not None


@flow(
    name="migrate-tenant",
    flow_run_name=_run_name,
    log_prints=True,
    persist_result=True,
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_POOL),  # type: ignore[arg-type]
    on_failure=[_let_users_in_hook],
    on_cancellation=[_let_users_in_hook],
    on_crashed=[_let_users_in_hook],
)
def migrate_tenant(
    config: TenantConfig,
    users: list[str] | None = None,
    only_failed: bool = False,
    phase: Phase = Phase.full,
    dry_run: bool = False,
) -> State[Any]:
    """Migrate a tenant's users; Failed (naming them) when any user failed."""
    quiet_designed_failures()  # the Failed returned below is the outcome, not a crash
    # No tags on the task runs: Prefect takes a tag-concurrency lease through the API for
    # every tagged task run (two round trips each, profiled at about 40 % of a small user's
    # orchestration time). The run itself is tagged by its deployment and named by tenant.
    return _procedure(config, users, only_failed, phase, dry_run or config.options.dry_run)


def _procedure(
    config: TenantConfig,
    users: list[str] | None,
    only_failed: bool,
    phase: Phase,
    dry_run: bool,
) -> State[Any]:
    logger = get_run_logger()
    step = tasks.for_config(config)  # options.retries applied to every step
    discovery = step.discover_users(config)
    rerun = steps.rerun_candidates(config) if only_failed else {}
    selected, unknown = steps.select_users(
        config, discovery.users, users=users, only_failed=only_failed
    )
    if unknown:
        return Failed(message=f"no such user(s) in the selected server names: {unknown}")
    rerunning = ""
    if only_failed:
        if not selected:
            return Completed(
                message="only_failed: nothing to rerun, no user is failed, excluded or paused"
            )
        rerunning = "only_failed reran " + ", ".join(
            f"{u.key} ({rerun.get(u.key, 'not done')})"
            for u in sorted(selected, key=lambda u: u.key)
        )
        logger.info("%s", rerunning)
    logger.info("%d of %d discovered users selected", len(selected), len(discovery.users))

    report = step.preflight_validate(config, replace(discovery, users=selected), users)
    if report.blocking:
        return Failed(
            message="preflight found blocking problems: "
            + "; ".join(f"{f.code} {f.message}" for f in report.blocking)
        )
    runnable = report.eligible_users
    exclusions = steps.record_exclusions(config, report)
    if exclusions.findings:
        logger.warning("left out by preflight: %s", exclusions.describe())

    commands = step.restart_service(config, runnable, dry_run)
    if dry_run:
        print("dry run: nothing moves. Commands restart-service would run:\n" + "\n".join(commands))
        return Completed(message=f"dry run: {len(runnable)} users would migrate")
    tasks.ensure_source_limit(config)
    try:
        with tasks.source_slots(config, len(runnable)):
            failed, paused = _migrate_users(
                config, step, runnable, phase, report.folders_left_to_transfer
            )
    finally:
        step.let_users_in(config)

    tasks.build_report(config)
    return _final_state(len(runnable), failed, paused, exclusions, note=rerunning)


def _final_state(
    runnable: int,
    failed: list[str],
    paused: list[str],
    exclusions: steps.Exclusions,
    *,
    note: str = "",
) -> State[Any]:
    """Failed (naming the users) when any user failed or was left out; Completed otherwise."""
    excluded, already_done = exclusions.keys, list(exclusions.already_done)
    notes = []
    if paused:
        notes.append(f"{len(paused)} paused by the daily byte budget (resume next run): {paused}")
    if excluded:
        done_note = (
            f" ({len(already_done)} of them migrated by an earlier run: {already_done})"
            if already_done
            else ""
        )
        notes.append(f"{len(excluded)} excluded by preflight: {excluded}{done_note}")
    done = runnable - len(failed) - len(paused)
    # Counted over every selected user: the ones preflight left out were not migrated either.
    selected = runnable + len(excluded)
    message = "; ".join([f"{done} of {selected} users migrated", *notes, *([note] if note else [])])
    if failed:
        return Failed(
            message=f"{len(failed)} of {runnable} users failed: {sorted(failed)}; " + message
        )
    if excluded:
        return Failed(message=message)
    return Completed(message=message)


def _migrate_users(
    config: TenantConfig,
    step: tasks.Steps,
    users: list[ScalixUser],
    phase: Phase,
    check_folders_of: frozenset[str],
) -> tuple[list[str], list[str]]:
    """Run transfer (extract and load at once) -> verify per user.

    At most ``users_at_once`` users read the source at once (their transfer step holds the
    source connection); a user whose transfer is done verifies against the destination while
    the next user's transfer starts, up to as many again."""
    chain: list[tuple[str, Callable[[ScalixUser], PrefectFuture[Any]]]] = [
        (
            "transfer",
            lambda u: step.transfer_user.submit(config, u, phase, u.key in check_folders_of),
        ),
        ("verify", lambda u: step.verify_user.submit(config, u)),
    ]
    if config.destination.calendar or config.destination.contacts:
        # Calendars and address books: their own task, after the mail is loaded, before verify.
        chain.insert(len(chain) - 1, ("groupware", lambda u: step.groupware_user.submit(config, u)))
    created = create_progress_artifact(
        progress=0.0,
        key=tasks.artifact_key(config.tenant, "progress"),
        description=f"Users finished of {len(users)}",
    )
    progress = created if isinstance(created, UUID) else None
    waiting: deque[ScalixUser] = deque(users)
    running: list[_UserRun] = []
    failed: list[str] = []
    paused_users: list[str] = []
    finished = 0
    at_once = tasks.users_at_once(config)
    reported_at = 0.0
    trimmer = Trimmer()  # a finished user's freed memory back to the system, now and then
    while waiting or running:
        reading = sum(1 for r in running if r.step == 0)
        while waiting and reading < at_once and len(running) < 2 * at_once:
            user = waiting.popleft()
            running.append(_UserRun(user, chain[0][1](user)))
            reading += 1
        concurrent.futures.wait(
            [r.future.wrapped_future for r in running],  # type: ignore[attr-defined]
            timeout=POLL_S,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )
        for run in [r for r in running if r.future.wrapped_future.done()]:  # type: ignore[attr-defined]
            run.future.wait()  # caches the final state; .state would otherwise ask the API
            state = run.future.state
            if state.is_completed():
                run.results[chain[run.step][0]] = _value_of(state)
            paused = run.paused
            if state.is_completed() and run.step + 1 < len(chain) and not paused:
                run.step += 1
                run.future = chain[run.step][1](run.user)
                continue
            running.remove(run)
            finished += 1
            trimmer.maybe()
            if not state.is_completed():
                failed.append(run.user.key)
            elif paused:
                paused_users.append(run.user.key)
            # An API round trip: at most one a second (and the last), not one per user.
            if progress is not None and (
                finished == len(users) or time.monotonic() - reported_at >= PROGRESS_EVERY_S
            ):
                update_progress_artifact(progress, progress=100.0 * finished / len(users))
                reported_at = time.monotonic()
    return failed, paused_users
