"""Run one tenant's steps in this process, without Prefect: discover, preflight, extract,
load, verify, report (the order the flow runs them)."""

from __future__ import annotations

from scalix_migrate import steps
from scalix_migrate.config import TenantConfig
from scalix_migrate.records import ScalixUser
from scalix_migrate.report import write_reports


def migrate_all(cfg: TenantConfig, *, phase: steps.Phase = "full") -> list[ScalixUser]:
    """Every selected user through extract -> load -> verify; the reports written."""
    discovery = steps.discover_step(cfg)
    steps.preflight_step(cfg, discovery)
    for user in discovery.users:
        steps.extract_step(cfg, user, phase=phase)
        steps.load_step(cfg, user)
        steps.verify_step(cfg, user)
    with steps.journal_for(cfg) as journal:
        write_reports(journal, cfg.tenant, cfg.options.reports_dir)
    return discovery.users
