"""The tenant flow end to end on the embedded sandbox (pymap + paramiko), into a Maildir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.migrate_tenant import migrate_tenant
from scalix_migrate.config import TenantConfig, load_config
from scalix_migrate.discovery import discover_users
from scalix_migrate.sandbox import Sandbox
from scalix_migrate.steps import journal_for
from tests.support.fidelity import assert_user_migrated_exactly

pytestmark = pytest.mark.usefixtures("prefect_server", "fast_retries")

# The seed's two users that preflight leaves out: a primary address not listed first (M0022)
# and a folder name containing a separator character.
PROBLEM_USERS = ["priya.shah@acme.test", "lars.berg@branch.acme.test"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("sandbox")) as sb:
        yield sb


def _config(sandbox: Sandbox, tmp_path: Path, **options: Any) -> TenantConfig:
    data = sandbox.config_data(
        {"type": "maildir", "path": str(tmp_path / "maildir" / "{email}")}, tenant="flowtest"
    )
    data["options"].update(
        {
            "staging_dir": str(tmp_path / "staging"),
            "reports_dir": str(tmp_path / "reports"),
            "state": {"dir": str(tmp_path / "state")},
            **options,
        }
    )
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path)


def test_flow_moves_every_message_exactly_and_a_rerun_adds_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    cfg = _config(sandbox, tmp_path, users={"exclude": PROBLEM_USERS})

    state = migrate_tenant(config=cfg, return_state=True)

    assert state.is_completed(), state.message
    users = discover_users(cfg).users
    assert len(users) == 4
    with journal_for(cfg) as journal:
        assert {
            r.user_key: r.status
            for r in journal.user_rows(cfg.tenant)
            if r.user_key not in PROBLEM_USERS
        } == {u.key: "done" for u in users}
        moved = sum(assert_user_migrated_exactly(cfg, journal, u) for u in users)
        loaded_before = journal.counts_by_state(cfg.tenant)
    assert moved > 100
    report = (tmp_path / "reports" / "users.csv").read_text(encoding="utf-8")
    assert "kim.lee@acme.test" in report

    again = migrate_tenant(config=cfg, return_state=True)

    assert again.is_completed(), again.message
    with journal_for(cfg) as journal:
        assert journal.counts_by_state(cfg.tenant) == loaded_before
        for u in users:  # still exactly once: the rerun appended nothing
            assert_user_migrated_exactly(cfg, journal, u)


def test_preflight_exclusions_fail_the_run_and_name_the_users(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Named by pattern, not by address: Priya's export identity is then her authentication
    # id, her second address (an address named in include would count as the export name).
    cfg = _config(sandbox, tmp_path, users={"include": ["sxadmin*", "priya*", "lars*"]})

    state = migrate_tenant(config=cfg, return_state=True)

    assert state.is_failed()
    assert "2 excluded by preflight" in (state.message or "")
    with journal_for(cfg) as journal:
        status = {r.user_key: r.status for r in journal.user_rows(cfg.tenant)}
    assert status == {
        "priya.shah@acme.test": "excluded",
        "lars.berg@branch.acme.test": "excluded",
        "sxadmin@acme.test": "done",
    }


def test_failed_user_fails_the_run_and_only_failed_reruns_just_that_user(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    cfg = _config(
        sandbox,
        tmp_path,
        users={"include": ["kim.lee@acme.test", "sxadmin*", "j.mueller@acme.test"]},
    )
    # A file where Kim's Sent folder must go: preflight (root writable) passes, load fails.
    blocker = tmp_path / "maildir" / "kim.lee@acme.test" / ".Sent"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory", encoding="utf-8")

    state = migrate_tenant(config=cfg, return_state=True)

    assert state.is_failed()
    assert "1 of 3 users failed: ['kim.lee@acme.test']" in (state.message or "")
    with journal_for(cfg) as journal:
        rows = {r.user_key: r for r in journal.user_rows(cfg.tenant)}
    assert rows["kim.lee@acme.test"].status == "failed"
    assert rows["kim.lee@acme.test"].error_code
    others_finished = {k: r.load_finished for k, r in rows.items() if k != "kim.lee@acme.test"}
    assert all(r.status == "done" for k, r in rows.items() if k != "kim.lee@acme.test")

    blocker.unlink()
    rerun = migrate_tenant(config=cfg, only_failed=True, return_state=True)

    assert rerun.is_completed(), rerun.message
    assert "1 of 1 users migrated" in (rerun.message or "")
    with journal_for(cfg) as journal:
        rows = {r.user_key: r for r in journal.user_rows(cfg.tenant)}
        users = {u.key: u for u in discover_users(cfg).users}
        assert_user_migrated_exactly(cfg, journal, users["kim.lee@acme.test"])
    assert rows["kim.lee@acme.test"].status == "done"
    # The users that had succeeded were not touched by the rerun.
    assert {
        k: r.load_finished for k, r in rows.items() if k != "kim.lee@acme.test"
    } == others_finished


def test_unknown_user_name_fails_before_anything_moves(sandbox: Sandbox, tmp_path: Path) -> None:
    cfg = _config(sandbox, tmp_path)

    state = migrate_tenant(config=cfg, users=["nobody@acme.test"], return_state=True)

    assert state.is_failed()
    assert "nobody@acme.test" in (state.message or "")
    assert not (tmp_path / "maildir").exists()
