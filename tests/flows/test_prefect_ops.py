"""Operating from Prefect: deployments per tenant, the UI's Retry, artifacts, concurrency."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.flow_engine import run_flow
from prefect.states import AwaitingRetry

from flows.migrate_tenant import migrate_tenant
from scalix_migrate import deploy as deployer
from scalix_migrate.config import TenantConfig, load_config
from scalix_migrate.sandbox import Sandbox
from scalix_migrate.steps import journal_for

pytestmark = pytest.mark.usefixtures("prefect_server", "fast_retries")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("sandbox")) as sb:
        yield sb


def _config(sandbox: Sandbox, tmp_path: Path, tenant: str, include: list[str]) -> TenantConfig:
    data = sandbox.config_data(
        {"type": "maildir", "path": str(tmp_path / "maildir" / "{email}")}, tenant=tenant
    )
    data["options"].update(
        {
            "staging_dir": str(tmp_path / "staging"),
            "reports_dir": str(tmp_path / "reports"),
            "state": {"dir": str(tmp_path / "state")},
            "users": {"include": include},
        }
    )
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path)


def test_deploy_renders_each_tenant_config_into_a_deployment(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    shutil.copy(REPO / "configs" / "examples" / "acme.yaml", tenants / "acme.yaml")
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name="scalix-migrate", type="process"), overwrite=True
        )

    ((_, cfg),) = deployer.tenant_configs(tenants)
    name = deployer.deploy(cfg)

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(name)
    assert dep.work_pool_name == "scalix-migrate"
    assert set(dep.tags) == {"scalix-migrate", "tenant-acme"}
    assert dep.global_concurrency_limit is not None
    assert dep.global_concurrency_limit.limit == 1  # one run at a time per tenant
    config = dep.parameters["config"]
    assert config["source"]["admin_password"] == "prefect-secret:acme-scalix-admin"
    assert TenantConfig.model_validate(config) == cfg
    (schedule,) = dep.schedules
    assert schedule.parameters == {"phase": "delta"}
    assert schedule.schedule.cron == "0 2 * * *"  # type: ignore[union-attr]


def test_deploy_command_refuses_a_broken_tenant_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("tenant: Bad Name\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "scalix_migrate.cli", "deploy", "--configs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert f"{tmp_path / 'bad.yaml'}:1 tenant: expected lowercase letters" in proc.stderr


def test_written_prefect_yaml_matches_the_tenant_files(tmp_path: Path) -> None:
    # The example tenant files in git, rendered as the example prefect.yaml.
    tracked = subprocess.run(
        ["git", "ls-files", "configs/examples"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    for name in tracked:
        shutil.copy(REPO / name, tenants / Path(name).name)
    out = tmp_path / "prefect.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalix_migrate.cli",
            "deploy",
            "--configs",
            str(tenants),
            "--write-prefect-yaml",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    example = REPO / "deployments" / "prefect.example.yaml"
    assert out.read_text(encoding="utf-8") == example.read_text(encoding="utf-8"), (
        "deployments/prefect.example.yaml is stale: run scalix-migrate deploy "
        "configs/examples/*.yaml --write-prefect-yaml deployments/prefect.example.yaml"
    )


def test_retry_of_a_failed_run_reruns_only_the_failed_user(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """What the UI's Retry does: the same flow run, set AwaitingRetry, run again."""
    cfg = _config(sandbox, tmp_path, "retrytest", ["kim.lee@acme.test", "j.mueller@acme.test"])
    blocker = tmp_path / "maildir" / "kim.lee@acme.test" / ".Sent"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory", encoding="utf-8")
    params: dict[str, Any] = {"config": cfg}
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(migrate_tenant, parameters=params)

    first = run_flow(migrate_tenant, flow_run=flow_run, parameters=params, return_type="state")

    assert first.is_failed()  # type: ignore[union-attr]
    with journal_for(cfg) as journal:
        rows = {r.user_key: r for r in journal.user_rows(cfg.tenant)}
    assert rows["kim.lee@acme.test"].status == "failed"
    mueller_extracted = rows["j.mueller@acme.test"].extract_started
    assert rows["j.mueller@acme.test"].status == "done"

    blocker.unlink()
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, AwaitingRetry(), force=True)
        flow_run = client.read_flow_run(flow_run.id)
    second = run_flow(migrate_tenant, flow_run=flow_run, parameters=params, return_type="state")

    assert second.is_completed(), second.message  # type: ignore[union-attr]
    with journal_for(cfg) as journal:
        rows = {r.user_key: r for r in journal.user_rows(cfg.tenant)}
    assert rows["kim.lee@acme.test"].status == "done"
    # The user that had succeeded came from Prefect's cache: its steps did not run again.
    assert rows["j.mueller@acme.test"].extract_started == mueller_extracted


def test_artifacts_show_progress_users_and_summary(sandbox: Sandbox, tmp_path: Path) -> None:
    cfg = _config(sandbox, tmp_path, "artifacts", ["kim.lee@acme.test", "sxadmin*"])

    state = migrate_tenant(config=cfg, return_state=True)

    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        users = client.read_latest_artifacts()
    by_key = {a.key: a for a in users if a.key}
    table = by_key["artifacts-users"].data
    rows = yaml.safe_load(table) if isinstance(table, str) else table
    kim = next(r for r in rows if r["user"] == "kim.lee@acme.test")
    assert kim["status"] == "done"
    assert kim["loaded"] == kim["found"] > 0
    assert kim["failed"] == 0
    assert "Migration summary: artifacts" in str(by_key["artifacts-summary"].data)
    assert by_key["artifacts-progress"].data == 100.0
    assert "# Preflight findings" in str(by_key["artifacts-preflight-summary"].data)
    assert "artifacts-preflight" in by_key
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("scalix-source-127-0-0-1")
    assert limit.limit == cfg.options.concurrency.connections_per_server


def test_deploy_never_picks_up_the_example_tenant() -> None:
    """configs/tenants/ holds real tenants only; the fictional acme lives in configs/examples/."""
    deployed = [cfg.tenant for _, cfg in deployer.tenant_configs(REPO / "configs" / "tenants")]
    assert "acme" not in deployed
    assert (REPO / "configs" / "examples" / "acme.yaml").exists()


def test_sandbox_deployment_and_its_runs_keep_every_secret_out_of_prefect(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """What the README's walk-through does: sandbox config -> deploy -> runs (issue 11)."""
    tenants = tmp_path / "tenants"
    path = sandbox.write_config(
        tenants / "sandbox.yaml",
        {"type": "maildir", "path": str(tmp_path / "maildir" / "{email}")},
        tenant="secretcheck",
    )
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["options"].update(
        staging_dir=str(tmp_path / "staging"),
        reports_dir=str(tmp_path / "reports"),
        state={"dir": str(tmp_path / "state")},
        users={"include": ["kim.lee@acme.test"]},
    )
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    secrets = [sandbox.admin_password, sandbox.ssh_password]
    for ref in (data["source"]["admin_password"], data["source"]["ssh"]["password"]):
        assert ref.startswith("file:")
        assert Path(ref.removeprefix("file:")).stat().st_mode & 0o077 == 0
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name="scalix-migrate", type="process"), overwrite=True
        )

    ((_, cfg),) = deployer.load_tenants([path])
    name = deployer.deploy(cfg)
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(name)
        client.create_flow_run_from_deployment(dep.id)
    state = migrate_tenant(config=cfg, return_state=True)  # as `scalix-migrate run` does
    assert state.is_completed(), state.message

    with get_client(sync_client=True) as client:
        records = [
            *(d.model_dump_json() for d in client.read_deployments()),
            *(r.model_dump_json() for r in client.read_flow_runs()),
            *(log.model_dump_json() for log in client.read_logs()),
            *(a.model_dump_json() for a in client.read_artifacts()),
        ]
    assert any("secretcheck" in r for r in records)
    for secret in secrets:
        assert not [r[:200] for r in records if secret in r]


def test_deploy_and_run_refuse_inline_secrets_naming_file_line_and_fix(tmp_path: Path) -> None:
    literal = "inline-Pa55-word-xyz"
    path = tmp_path / "inline.yaml"
    path.write_text(
        "tenant: inline\n"
        "allow_inline_secrets: true\n"
        "source:\n"
        "  server: scalix.example.test\n"
        "  server_names: [mail1]\n"
        "  admin_user: sxadmin\n"
        f"  admin_password: {literal}\n"
        "  test_user: kim@example.test\n"
        "destination:\n"
        "  type: maildir\n"
        f"  path: '{tmp_path}/out/{{email}}'\n",
        encoding="utf-8",
    )
    for command in (["deploy", str(path)], ["run", str(path)]):
        proc = subprocess.run(
            [sys.executable, "-m", "scalix_migrate.cli", *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(
            f"{path}:7 source.admin_password: an inline secret cannot go to Prefect"
        )
        assert "file:/path" in proc.stderr
        assert literal not in proc.stdout + proc.stderr
