"""Running the tenant flow in this process, for the CLI and the demo (edge code, like them).

Prefect reads its settings when it is first imported, so this module imports it only inside
the functions, after :func:`prepare_prefect` has set them.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

from scalix_migrate.config import TenantConfig
from scalix_migrate.preflight import PreflightReport
from scalix_migrate.private import private_prefect_home

PREFLIGHT_TASK_RUN = "preflight-{tenant}"  # tasks.preflight_validate's task_run_name


def prepare_prefect() -> None:
    """What must be set before Prefect is first imported: it reads its settings then."""
    # Without PREFECT_API_URL, Prefect starts a temporary local server; on a busy 2-core
    # machine its default 20 s start-up allowance is too short.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    private_prefect_home()


@functools.cache  # once per process: Prefect starts the temporary server once, then reuses it
def _announce_temporary_server() -> None:
    """The 5-20 s the temporary server takes are silent otherwise: say what the wait is."""
    print(
        "Prefect: PREFECT_API_URL is not set, starting a temporary local Prefect server "
        "for this run (takes 5-20 s; it stops when the command ends)",
        file=sys.stderr,
        flush=True,
    )


def run_flow(cfg: TenantConfig, **params: Any) -> Any:
    """Run the tenant flow in this process and return its final state."""
    prepare_prefect()
    from scalix_migrate.prefect_api import configured_api_url

    if configured_api_url() is None:
        _announce_temporary_server()
    from flows.migrate_tenant import migrate_tenant

    return migrate_tenant(config=cfg, return_state=True, **params)


def preflight_report(cfg: TenantConfig, state: Any) -> PreflightReport | None:
    """The report the preflight task of the flow run that ended in ``state`` returned, as
    Prefect persisted it; None when the run did not get that far."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    name = PREFLIGHT_TASK_RUN.format(tenant=cfg.tenant)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            ),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[name])),
        )
    done = [r for r in runs if r.state is not None and r.state.is_completed()]
    if not done:
        return None
    report = done[-1].state.result()  # type: ignore[union-attr]  # completed: it has one
    return report if isinstance(report, PreflightReport) else None
