"""Records across the task boundary: the tasks return (and Prefect persists) the core's
records, the flow and the artifacts are built from them, never from the report files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.migrate_tenant import migrate_tenant
from scalix_migrate import steps as steps_module
from scalix_migrate.config import TenantConfig, load_config
from scalix_migrate.preflight import PreflightReport
from scalix_migrate.sandbox import Sandbox
from scalix_migrate.steps import journal_for
from scalix_migrate.transfer import TransferResult
from scalix_migrate.verify import VerifyResult

pytestmark = pytest.mark.usefixtures("prefect_server", "fast_retries")

PRIYA = "priya.shah@acme.test"  # left out by preflight: M0022 (see test_flow_sandbox)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("sandbox")) as sb:
        yield sb


def _config(sandbox: Sandbox, tmp_path: Path, tenant: str) -> TenantConfig:
    data = sandbox.config_data(
        {"type": "maildir", "path": str(tmp_path / "maildir" / "{email}")}, tenant=tenant
    )
    data["options"].update(
        {
            "staging_dir": str(tmp_path / "staging"),
            "reports_dir": str(tmp_path / "reports"),
            "state": {"dir": str(tmp_path / "state")},
            # Named by pattern: Priya's export identity is then not her primary address.
            "users": {"include": ["sxadmin*", "priya*"]},
        }
    )
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path)


def _artifacts(tenant: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        return {a.key: a.data for a in client.read_latest_artifacts() if a.key.startswith(tenant)}


def test_task_results_persisted_by_prefect_are_the_records(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    cfg = _config(sandbox, tmp_path, "records")

    state = migrate_tenant(config=cfg, return_state=True)

    assert "1 of 2 users migrated" in (state.message or ""), state.message
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    # Read back from Prefect's result storage (the runs come from the API, not this process).
    wanted = ("preflight-records", "transfer-sxadmin@acme.test", "verify-sxadmin@acme.test")
    results = {r.name: r.state.result() for r in runs if r.name in wanted and r.state}
    report = results["preflight-records"]
    assert isinstance(report, PreflightReport)
    assert list(report.left_out) == [PRIYA]
    assert [u.key for u in report.eligible_users] == ["sxadmin@acme.test"]
    transfer = results["transfer-sxadmin@acme.test"]
    assert isinstance(transfer, TransferResult)
    assert transfer.load.stopped_code is None
    assert transfer.extract.staged == transfer.load.appended > 0
    verify = results["verify-sxadmin@acme.test"]
    assert isinstance(verify, VerifyResult)
    assert verify.ok


def test_without_preflight_files_the_run_goes_on_from_the_report(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """preflight.csv / preflight.md not written: the artifacts and the exclusions come from
    the preflight task's report, not from the files."""
    cfg = _config(sandbox, tmp_path, "nofiles")
    monkeypatch.setattr(steps_module, "write_preflight_files", lambda history, directory: [])

    state = migrate_tenant(config=cfg, return_state=True)

    assert state.is_failed()
    assert f"1 excluded by preflight: ['{PRIYA}']" in (state.message or ""), state.message
    assert not (tmp_path / "reports" / "preflight.md").exists()
    summary = str(_artifacts(cfg.tenant)["nofiles-preflight-summary"])
    assert "# Preflight findings" in summary
    assert "PF-USR-001" in summary
    assert PRIYA in summary
    with journal_for(cfg) as journal:
        status = {r.user_key: r.status for r in journal.user_rows(cfg.tenant)}
    assert status == {PRIYA: "excluded", "sxadmin@acme.test": "done"}


def test_preflight_artifact_shows_this_runs_findings_when_another_run_is_newer(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Another wave of the tenant (another worker, a clock ahead) records its preflight while
    this run's goes on: this run's artifact still shows this run's findings."""
    cfg = _config(sandbox, tmp_path, "waves")
    with journal_for(cfg) as journal:
        journal.record_preflight(
            cfg.tenant,
            "wave-b",
            [
                {
                    "severity": "warning",
                    "code": "PF-SES-001",
                    "user": "someone.else@acme.test",
                    "message": "another wave's finding",
                    "remedy": "",
                }
            ],
            run_name="wave-b",
            at=datetime.now(UTC) + timedelta(hours=1),
        )

    migrate_tenant(config=cfg, return_state=True)

    summary = str(_artifacts(cfg.tenant)["waves-preflight-summary"])
    assert "PF-USR-001" in summary
    assert PRIYA in summary
    assert "another wave's finding" not in summary
