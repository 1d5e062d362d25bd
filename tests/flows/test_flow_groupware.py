"""The tenant flow with calendars and address books: the sandbox's items into Radicale."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import tasks
from flows.migrate_tenant import migrate_tenant
from scalix_migrate import steps
from scalix_migrate.config import TenantConfig, load_config
from scalix_migrate.demo_groupware import groupware_checks, groupware_destination
from scalix_migrate.errors import TransientError
from scalix_migrate.groupware_sync import dav_client
from scalix_migrate.records import ScalixUser
from scalix_migrate.sandbox import Sandbox
from scalix_migrate.sandbox.dav_server import RadicaleServer

pytestmark = pytest.mark.usefixtures("prefect_server", "fast_retries")

PROBLEM_USERS = ["priya.shah@acme.test", "lars.berg@branch.acme.test"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("sandbox")) as sb:
        yield sb


def _config(sandbox: Sandbox, radicale: RadicaleServer, tmp_path: Path) -> TenantConfig:
    password = uuid.uuid4().hex
    for user in sandbox.directory().users:
        for address in user.addresses:
            radicale.add_user(address.lower(), password)
    dest: dict[str, Any] = {"type": "maildir", "path": str(tmp_path / "maildir" / "{email}")}
    # The DAV password as a file: reference, like the sandbox's own (no inline secret in
    # the flow run's parameters).
    dest.update(
        groupware_destination(
            radicale, sandbox.write_secret(f"dav_password_{uuid.uuid4().hex[:8]}", password)
        )
    )
    # One tenant name per test: the DAV server is shared, each test starts from empty homes.
    data = sandbox.config_data(dest, tenant="gw" + uuid.uuid4().hex[:8])
    data["options"].update(
        {
            "staging_dir": str(tmp_path / "staging"),
            "reports_dir": str(tmp_path / "reports"),
            "state": {"dir": str(tmp_path / "state")},
            "users": {"include": ["kim.lee@acme.test", "j.mueller@acme.test"]},
        }
    )
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path)


def _listing(cfg: TenantConfig) -> dict[str, dict[str, str]]:
    user = ScalixUser(display_name="Kim Lee", mailnode="main", addresses=("kim.lee@acme.test",))
    assert cfg.destination.calendar is not None
    assert cfg.destination.calendar.type == "caldav"
    with dav_client(cfg.destination.calendar, cfg, user) as client:
        return {n: client.list_etags(client.collection_url(n)) for n in client.collections()}


def _wipe(cfg: TenantConfig) -> None:
    user = ScalixUser(display_name="Kim Lee", mailnode="main", addresses=("kim.lee@acme.test",))
    assert cfg.destination.calendar is not None
    assert cfg.destination.calendar.type == "caldav"
    with dav_client(cfg.destination.calendar, cfg, user) as client:
        for name in client.collections():
            client.delete(client.collection_url(name))


def test_groupware_is_a_task_per_user_counted_in_the_users_table_and_a_rerun_adds_nothing(
    sandbox: Sandbox, radicale: RadicaleServer, tmp_path: Path
) -> None:
    cfg = _config(sandbox, radicale, tmp_path)
    _wipe(cfg)

    state = migrate_tenant(config=cfg, return_state=True)

    assert state.is_completed(), state.message
    checks = {c.user: c for c in groupware_checks(cfg)}
    assert set(checks) == {"kim.lee@acme.test", "j.mueller@acme.test"}
    for check in checks.values():
        assert check.ok, check
        assert check.found["events"] == 8
        assert check.found["tasks"] == 2
        assert check.verified["events"] == 8
    with (tmp_path / "reports" / "users.csv").open(encoding="utf-8") as fh:
        rows = {r["user"]: r for r in csv.DictReader(fh)}
    kim = rows["kim.lee@acme.test"]
    assert (kim["events_found"], kim["events_created"], kim["events_verified"]) == ("8", "8", "8")
    assert kim["status"] == "done"
    before = _listing(cfg)
    assert sum(len(v) for v in before.values()) == checks["kim.lee@acme.test"].on_server

    again = migrate_tenant(config=cfg, return_state=True)

    assert again.is_completed(), again.message
    assert _listing(cfg) == before  # not one resource created or rewritten


def test_a_transient_dav_failure_is_retried_by_the_task(
    sandbox: Sandbox, radicale: RadicaleServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(sandbox, radicale, tmp_path)
    _wipe(cfg)
    calls: list[str] = []
    real = steps.groupware_step

    def flaky(config: TenantConfig, user: ScalixUser) -> dict[str, Any]:
        calls.append(user.key)
        if calls.count(user.key) == 1:
            raise TransientError("DAV server answered 503", code="SXM-GW-007", user=user.key)
        return real(config, user)

    monkeypatch.setattr(steps, "groupware_step", flaky)
    assert tasks.groupware_user.retries == 3

    state = migrate_tenant(config=cfg, return_state=True)

    assert state.is_completed(), state.message
    assert sorted(calls) == sorted(["kim.lee@acme.test", "j.mueller@acme.test"] * 2)
    assert all(c.ok for c in groupware_checks(cfg))
