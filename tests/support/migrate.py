"""Run one tenant's steps in this process, without Prefect: discover, preflight, extract,
load, verify, report (the order the flow runs them), each step retried on a transient fault
as the flow's tasks are (``options.retries.attempts`` times, no waits)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scalix_migrate import steps
from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import TransientError
from scalix_migrate.records import ScalixUser
from scalix_migrate.report import write_reports


def retried(
    cfg: TenantConfig,
    fn: Callable[[], Any],
    *,
    user: ScalixUser | None = None,
    step: str = "",
) -> Any:
    """``fn()``, called again after a TransientError while retries are left; each retry of a
    user step is counted as the flow's tasks count it (``steps.note_retry``)."""
    attempts = cfg.options.retries.attempts
    for attempt in range(attempts + 1):
        if attempt and user is not None:
            steps.note_retry(cfg, user, step, attempt + 1)
        try:
            return fn()
        except TransientError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def migrate_all(cfg: TenantConfig, *, phase: steps.Phase = "full") -> list[ScalixUser]:
    """Every selected user through extract -> load -> verify; the reports written."""
    discovery = retried(cfg, lambda: steps.discover_step(cfg))
    steps.preflight_step(cfg, discovery)
    for user in discovery.users:
        retried(
            cfg, lambda u=user: steps.extract_step(cfg, u, phase=phase), user=user, step="extract"
        )
        retried(cfg, lambda u=user: steps.load_step(cfg, u), user=user, step="load")
        retried(cfg, lambda u=user: steps.verify_step(cfg, u), user=user, step="verify")
    with steps.journal_for(cfg) as journal:
        write_reports(journal, cfg.tenant, cfg.options.reports_dir)
    return discovery.users
