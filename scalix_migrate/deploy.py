"""``scalix-migrate deploy``: one Prefect deployment per tenant config in ``configs/tenants/``
(or per file named). The examples in ``configs/examples/`` are never picked up.

Each tenant YAML is validated and rendered into the deployment's ``config`` parameter, so the
Prefect UI shows (and validates, as a form) the exact config of every run; secrets stay
references (``${ENV}``, ``file:``, ``prefect-secret:``) because that is how the config
serialises. Every deployment runs on a process work pool, at most one run at a time
(``concurrency_limit: 1``), tagged with the tenant, with an optional cron schedule whose runs
use ``deployment.schedule_phase`` (a nightly delta, say).

Like the CLI, this is an edge module: it imports Prefect.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scalix_migrate.config import (
    INLINE_REFUSED_BY_PREFECT,
    TenantConfig,
    inline_secret_problems,
    load_config,
)
from scalix_migrate.errors import ConfigError

ENTRYPOINT = "flows/migrate_tenant.py:migrate_tenant"
PROJECT_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class TenantDeployment:
    name: str
    work_pool: str
    tags: list[str]
    parameters: dict[str, Any]
    cron: str | None
    timezone: str
    concurrency_limit: int
    schedule_parameters: dict[str, Any]


def tenant_configs(directory: Path) -> list[tuple[Path, TenantConfig]]:
    """Every ``*.yaml`` in ``directory``, validated (a ConfigError names file and line)."""
    paths = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    return load_tenants(paths)


def load_tenants(paths: list[Path]) -> list[tuple[Path, TenantConfig]]:
    """Validate each tenant file for a deployment: every problem of every file at once.

    Inline secrets are refused even with ``allow_inline_secrets: true``: the deployment's
    parameters are stored in Prefect's database and shown in the UI.
    """
    found: list[tuple[Path, TenantConfig]] = []
    problems: list[str] = []
    for p in paths:
        try:
            cfg = load_config(p)
        except ConfigError as exc:
            problems += exc.problems
            continue
        problems += inline_secret_problems(p, cfg, why=INLINE_REFUSED_BY_PREFECT)
        found.append((p, cfg))
    if problems:
        raise ConfigError(problems[0], problems=problems)
    return found


def plan(cfg: TenantConfig) -> TenantDeployment:
    dep = cfg.deployment
    return TenantDeployment(
        name=cfg.tenant,
        work_pool=dep.work_pool,
        tags=["scalix-migrate", f"tenant-{cfg.tenant}"],
        parameters={"config": cfg.model_dump(mode="json")},
        cron=dep.schedule_cron,
        concurrency_limit=dep.concurrency_limit,
        timezone=dep.schedule_timezone,
        schedule_parameters={"phase": dep.schedule_phase.value},
    )


def deploy(cfg: TenantConfig, *, project_dir: Path = PROJECT_DIR) -> str:
    """Create or update the tenant's deployment; returns ``flow-name/deployment-name``."""
    from prefect import flow as prefect_flow
    from prefect.schedules import Cron

    d = plan(cfg)
    loaded = prefect_flow.from_source(source=str(project_dir), entrypoint=ENTRYPOINT)
    assert not inspect.isawaitable(loaded)  # sync caller: from_source returns the flow
    schedules = (
        [Cron(d.cron, timezone=d.timezone, parameters=d.schedule_parameters)] if d.cron else None
    )
    loaded.deploy(
        name=d.name,
        work_pool_name=d.work_pool,
        parameters=d.parameters,
        tags=d.tags,
        concurrency_limit=d.concurrency_limit,
        schedules=schedules,
        description=f"Scalix migration of tenant {cfg.tenant}",
        build=False,
        push=False,
        print_next_steps=False,
    )
    return f"migrate-tenant/{d.name}"


def prefect_yaml(configs: list[TenantConfig]) -> str:
    """The same deployments as a ``prefect.yaml`` for ``prefect deploy --all``."""
    deployments = []
    for cfg in configs:
        d = plan(cfg)
        entry: dict[str, Any] = {
            "name": d.name,
            "entrypoint": ENTRYPOINT,
            "tags": d.tags,
            "concurrency_limit": d.concurrency_limit,
            "work_pool": {"name": d.work_pool, "work_queue_name": "default"},
            "parameters": d.parameters,
        }
        if d.cron:
            entry["schedules"] = [
                {"cron": d.cron, "timezone": d.timezone, "parameters": d.schedule_parameters}
            ]
        deployments.append(entry)
    doc = {
        "name": "scalix-migrate",
        "prefect-version": "3.9.1",
        # The worker runs the flow from the project checkout named by SCALIX_MIGRATE_HOME.
        "pull": [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": "{{ $SCALIX_MIGRATE_HOME }}"
                }
            }
        ],
        "deployments": deployments,
    }
    header = (
        "# Generated by `scalix-migrate deploy --write-prefect-yaml FILE` from tenant files.\n"
        "# Edit the tenant YAML files, not this file; secrets stay references.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
