"""One Phase type: config, CLI, flow, tasks, steps and extract speak of the same full/delta."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from prefect.exceptions import ParameterTypeError
from typer.testing import CliRunner

import tasks
from flows.migrate_tenant import migrate_tenant
from scalix_migrate import deploy, extract, steps, transfer
from scalix_migrate.cli import app
from scalix_migrate.config import DeploymentOptions, Phase, TenantConfig
from tests.unit.test_config import GOOD


def _config() -> TenantConfig:
    return TenantConfig.model_validate(
        {**yaml.safe_load(GOOD), "deployment": {"schedule_cron": "0 2 * * *"}}
    )


@pytest.mark.parametrize(
    "fn",
    [
        extract.extract_user,
        transfer.transfer_user,
        steps.extract_step,
        steps.transfer_step,
        tasks.transfer_user.fn,
        migrate_tenant.fn,
    ],
    ids=lambda fn: f"{fn.__module__}.{fn.__name__}",
)
def test_every_phase_parameter_is_the_one_phase_type(fn: Callable[..., Any]) -> None:
    assert typing.get_type_hints(fn)["phase"] is Phase


def test_the_schedule_phase_is_a_phase() -> None:
    assert DeploymentOptions().schedule_phase is Phase.delta
    assert DeploymentOptions.model_validate({"schedule_phase": "full"}).schedule_phase is Phase.full


def test_the_flow_parameter_takes_the_strings_deployments_send() -> None:
    config = _config().model_dump(mode="json")
    schema = migrate_tenant.parameters.model_dump()
    assert schema["definitions"]["Phase"]["enum"] == ["full", "delta"]  # the UI's choice list
    checked = migrate_tenant.validate_parameters({"config": config, "phase": "delta"})
    assert checked["phase"] is Phase.delta
    with pytest.raises(ParameterTypeError, match="'full' or 'delta'"):
        migrate_tenant.validate_parameters({"config": config, "phase": "nightly"})


def test_a_scheduled_phase_is_plain_text_in_prefect_yaml() -> None:
    doc = yaml.safe_load(deploy.prefect_yaml([_config()]))
    (schedule,) = doc["deployments"][0]["schedules"]
    assert schedule["parameters"] == {"phase": "delta"}


def test_the_cli_refuses_an_unknown_phase_before_anything_runs() -> None:
    result = CliRunner().invoke(app, ["run", "no-such.yaml", "--phase", "nightly"])
    assert result.exit_code == 2
    assert "nightly" in result.output
