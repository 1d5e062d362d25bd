"""restart-service on the bed: dry run, health wait, a service that stays down, undo always."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.discovery import discover_users
from scalix_migrate.errors import FatalError
from scalix_migrate.records import ScalixUser
from scalix_migrate.sandbox.directory import DEFAULT_SERVICES, Directory
from scalix_migrate.service import UsersKeptOut, make_admin, plan_commands, prepare, unlock
from scalix_migrate.state import Journal
from tests.integration.scalix_bed import TenantSlice, config, new_user
from tests.testbed import ScalixTestbed


@pytest.fixture
def bed(testbed: ScalixTestbed) -> TenantSlice:
    """A slice without an admin of its own: restart-service never looks the admin up."""
    return TenantSlice.create(testbed, with_admin=False)


def snapshot(bed: TenantSlice) -> tuple[dict[str, str], str, dict[str, bool]]:
    d: Directory = bed.directory()
    return dict(d.services), d.tomcat_state, {u.name: u.locked for u in d.users}


@pytest.fixture
def healthy(bed: TenantSlice) -> Iterator[None]:
    """Every service in its normal state before and after the test."""

    def reset(d: Directory) -> None:
        d.services = dict(DEFAULT_SERVICES)
        d.broken_services = []
        d.tomcat_state = "Started"

    bed.update_directory(reset)
    yield
    bed.update_directory(reset)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(directory=tmp_path / "state") as j:
        yield j


def service_cfg(bed: TenantSlice, tmp_path: Path, **service: Any) -> TenantConfig:
    # Short health waits: the emulated restart is instant, so only a service that stays down
    # ever waits, and then for healthy_timeout_s per attempt.
    values = {"restart": True, "healthy_timeout_s": 5, **service}
    return config(bed, tmp_path, service=values)


def selected(cfg: TenantConfig, *names: str) -> list[ScalixUser]:
    found = discover_users(cfg)
    return [u for u in found.all_users if u.name in names]


@pytest.mark.usefixtures("healthy")
def test_dry_run_lists_commands_in_order_and_changes_nothing(
    bed: TenantSlice, tmp_path: Path
) -> None:
    u = new_user(bed, "dry")
    cfg = service_cfg(bed, tmp_path, lockout="accounts")
    users = selected(cfg, u.name)
    before = snapshot(bed)
    lines = plan_commands(cfg, users)
    assert snapshot(bed) == before
    lock = f"{bed.bin_dir}/ommodu -o '{u.name}' -K"
    assert lines[0].endswith(lock)
    assert "service scalix restart" in lines[1]
    assert lines[-2].endswith("omstat -u rci -c")
    assert lines[-1].endswith(f"{bed.bin_dir}/ommodu -o '{u.name}' -k")
    services = plan_commands(service_cfg(bed, tmp_path, lockout="services"), users)
    assert [line.split("/")[-1] for line in services if "omoff" in line] == [
        "omoff -d 0 pop3",
        "omoff -d 0 rci",
    ]


@pytest.mark.usefixtures("healthy")
def test_restart_waited_for_then_everything_let_back_in(
    bed: TenantSlice, tmp_path: Path, journal: Journal
) -> None:
    u = new_user(bed, "svc", sessions=["SWA client"])
    cfg = service_cfg(bed, tmp_path, lockout="services")
    before = snapshot(bed)
    with UsersKeptOut(cfg, journal, selected(cfg, u.name)) as outcome:
        inside = bed.directory()
        assert outcome.restarts == 1
        assert inside.tomcat_state == "Stopped"
        assert inside.services["POP3 Interface"] == "Disabled"
        assert inside.services["Remote Client Interface"] == "Disabled"
        assert inside.services["IMAP Server"] == "Enabled"
        assert outcome.foreign_sessions == []
        assert len(journal.pending_undos(cfg.tenant)) == 3
    assert snapshot(bed) == before
    assert journal.pending_undos(cfg.tenant) == []
    logged = [c.command for c in journal.commands(cfg.tenant)]
    assert any("service scalix restart" in c for c in logged)
    assert all(c.exit_status == 0 for c in journal.commands(cfg.tenant))


@pytest.mark.usefixtures("healthy")
def test_service_that_stays_down_fails_naming_it_and_users_get_back_in(
    bed: TenantSlice, tmp_path: Path, journal: Journal
) -> None:
    u = new_user(bed, "down")
    bed.update_directory(lambda d: setattr(d, "broken_services", ["SMTP Relay"]))
    cfg = service_cfg(bed, tmp_path, lockout="accounts", healthy_timeout_s=1, restart_attempts=2)
    with pytest.raises(FatalError) as err, UsersKeptOut(cfg, journal, selected(cfg, u.name)):
        pytest.fail("the body must not run when Scalix stays down")
    assert err.value.code == "SXM-SVC-001"
    assert "SMTP Relay" in err.value.message
    restarts = [c for c in journal.commands(cfg.tenant) if "service scalix restart" in c.command]
    assert len(restarts) == 2
    d = bed.directory()
    assert d.find(u.auth_id).locked is False  # type: ignore[union-attr]
    assert journal.pending_undos(cfg.tenant) == []


@pytest.mark.usefixtures("healthy")
def test_failure_mid_migration_still_unlocks_and_starts_everything(
    bed: TenantSlice, tmp_path: Path, journal: Journal
) -> None:
    a, b = new_user(bed, "mid"), new_user(bed, "mid")
    already = new_user(bed, "mid", locked=True)
    cfg = service_cfg(bed, tmp_path, lockout="accounts")
    before = snapshot(bed)
    seen: list[bool | None] = []

    def migrate() -> None:
        with UsersKeptOut(cfg, journal, selected(cfg, a.name, b.name, already.name)):
            inside = bed.directory().find(a.auth_id)
            seen.append(inside.locked if inside is not None else None)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        migrate()
    assert seen == [True]
    assert snapshot(bed) == before  # `already` stays locked: it was locked before we came
    assert journal.pending_undos(cfg.tenant) == []


@pytest.mark.usefixtures("healthy")
def test_unlock_after_a_crash_restores_the_state_found(
    bed: TenantSlice, tmp_path: Path, journal: Journal
) -> None:
    u = new_user(bed, "crash")
    before = snapshot(bed)
    users = selected(service_cfg(bed, tmp_path, restart=False), u.name)
    for lockout in ("services", "accounts"):
        cfg = service_cfg(bed, tmp_path, lockout=lockout, restart=False)
        with make_admin(cfg, journal) as admin:
            prepare(cfg, journal, users, admin)  # then the process "dies"
    assert snapshot(bed) != before
    assert len(journal.pending_undos(cfg.tenant)) == 4
    done = unlock(cfg, journal)
    assert len(done) == 4
    assert snapshot(bed) == before
    assert unlock(cfg, journal) == []  # idempotent
