"""The tenant flow end to end on the embedded sandbox (pymap + paramiko), into a Maildir."""

from __future__ import annotations

import csv
import re
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


def test_only_failed_reruns_the_users_preflight_left_out_and_names_them(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    cfg = _config(sandbox, tmp_path, users={"include": ["sxadmin*", "priya*", "lars*"]})
    first = migrate_tenant(config=cfg, return_state=True)
    assert first.is_failed()

    rerun = migrate_tenant(config=cfg, only_failed=True, return_state=True)

    message = rerun.message or ""
    assert "0 of 2 users migrated" in message
    assert (
        "only_failed reran lars.berg@branch.acme.test (excluded), "
        "priya.shah@acme.test (excluded)" in message
    )
    assert rerun.is_failed()  # nothing was fixed: preflight leaves them out again
    users = {r["user"]: r for r in csv.DictReader((tmp_path / "reports" / "users.csv").open())}
    assert users["lars.berg@branch.acme.test"]["error_code"] == "PF-USR-005"
    assert users["priya.shah@acme.test"]["error_code"] == "PF-USR-001"
    assert "remedy: " in users["priya.shah@acme.test"]["error"]
    history = list(csv.DictReader((tmp_path / "reports" / "preflight.csv").open()))
    assert len({r["run_id"] for r in history}) == 2  # both runs' findings are kept
    names = [_run_name(first), _run_name(rerun)]
    assert {r["run_name"] for r in history} == set(names)
    # Runs are told apart by name: tenant, phase, kind of rerun and start time.
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(rf"migrate-flowtest-full-{stamp}", names[0]), names
    assert re.fullmatch(rf"migrate-flowtest-full-only-failed-{stamp}", names[1]), names


def _run_name(state: Any) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def test_naming_a_user_by_its_primary_address_is_the_m0022_remedy(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    cfg = _config(sandbox, tmp_path, users={"include": ["sxadmin*", "priya*"]})

    named = migrate_tenant(config=cfg, users=["priya.shah@acme.test"], return_state=True)

    assert named.is_completed(), named.message
    with journal_for(cfg) as journal:
        status = {r.user_key: r.status for r in journal.user_rows(cfg.tenant)}
    assert status["priya.shah@acme.test"] == "done"

    # The next full run (not naming her) leaves her out again, but her mail is at the
    # destination: she stays done, and the report says so.
    full = migrate_tenant(config=cfg, return_state=True)

    assert "migrated by an earlier run: ['priya.shah@acme.test']" in (full.message or "")
    with journal_for(cfg) as journal:
        status = {r.user_key: r.status for r in journal.user_rows(cfg.tenant)}
    assert status["priya.shah@acme.test"] == "done"
    summary = (tmp_path / "reports" / "summary.md").read_text(encoding="utf-8")
    assert "excluded" not in summary.split("\n")[2]
