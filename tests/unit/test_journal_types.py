"""The journal's own types: the user status enum, the records its queries return, and one
journal (engine, schema check, column inspection) per process and URL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from scalix_migrate import demo, demo_groupware, state, steps
from scalix_migrate.config import TenantConfig, parse_config
from scalix_migrate.discovery import Discovery
from scalix_migrate.preflight import PreflightReport
from scalix_migrate.preflight_findings import finding
from scalix_migrate.records import (
    ItemClass,
    LedgerEntry,
    LoadState,
    ScalixUser,
    SourceFolder,
    SpecialFolder,
)
from scalix_migrate.report import write_reports
from scalix_migrate.state import Journal

TENANT = "acme"
USER = ScalixUser("Kim Lee", "acme", addresses=("kim.lee@acme.test",))


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(directory=tmp_path / "state") as j:
        j.upsert_users(TENANT, [USER])
        yield j


def _status(journal: Journal) -> str:
    (row,) = journal.user_rows(TENANT)
    return row.status


def test_a_status_that_is_not_a_member_cannot_be_written(journal: Journal) -> None:
    with pytest.raises(ValueError, match="doen"):
        journal.set_user_status(TENANT, USER.key, "doen")  # type: ignore[arg-type]
    assert _status(journal) == "pending"  # nothing was written


def test_statuses_come_back_as_the_enum_with_the_strings_journals_always_had(
    journal: Journal,
) -> None:
    status = state.UserStatus
    journal.set_user_status(TENANT, USER.key, status.excluded)
    (row,) = journal.user_rows(TENANT)
    assert row.status is status.excluded
    assert journal.users_with_status(TENANT, status.excluded) == [USER.key]
    # The stored strings (journals, users.csv, the CLI) are those of every earlier version.
    assert [s.value for s in status] == [
        "pending",
        "extracting",
        "extracted",
        "loading",
        "transferring",
        "loaded",
        "groupware",
        "verifying",
        "done",
        "failed",
        "excluded",
        "paused",
    ]


def _config(tmp_path: Path) -> TenantConfig:
    return parse_config(
        "tenant: acme\n"
        "source:\n"
        "  server: scalix.acme.test\n"
        "  server_names: [mail1]\n"
        "  admin_user: sxadmin\n"
        "  admin_password: ${X}\n"
        "  test_user: kim@acme.test\n"
        f"destination:\n  type: maildir\n  path: '{tmp_path}/mail/{{email}}'\n"
        f"options:\n  state:\n    dir: '{tmp_path}/state'\n  reports_dir: '{tmp_path}/reports'\n"
    )


def test_the_steps_of_one_process_open_the_journal_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One engine, one schema check, one column inspection per (process, URL): not one
    per step, nor per report or CLI command run in the same process."""
    opened: Counter[str] = Counter()

    def counting(what: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            opened[what] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(sqlalchemy, "create_engine", counting("engine", sqlalchemy.create_engine))
    monkeypatch.setattr(sqlalchemy, "inspect", counting("inspect", sqlalchemy.inspect))
    monkeypatch.setattr(
        state.metadata, "create_all", counting("create_all", state.metadata.create_all)
    )
    cfg = _config(tmp_path)

    steps.rerun_candidates(cfg)
    kim = ScalixUser(display_name="Kim Lee", mailnode="sales", addresses=("kim@acme.test",))
    left_out = finding("PF-USR-006", "test mailbox not readable", user=kim.key)
    steps.record_exclusions(cfg, PreflightReport(findings=[left_out], users=[kim]))
    steps.let_users_in_step(cfg)
    with steps.journal_for(cfg) as journal:
        write_reports(journal, cfg.tenant, cfg.options.reports_dir)
    # The demo's checks after the run read the same journal (no source here: no users).
    nobody = Discovery(users=[], all_users=[])
    for module in (demo, demo_groupware):
        monkeypatch.setattr(module, "discover_users", lambda _cfg: nobody)
    assert demo.compare(cfg) == ([], [])
    assert demo_groupware.groupware_checks(cfg) == []

    assert opened == {"engine": 1, "create_all": 1, "inspect": 1}


def test_queries_return_frozen_records_with_domain_types(journal: Journal) -> None:
    inbox = SourceFolder("INBOX", "INBOX", "/", frozenset(), special=SpecialFolder.inbox)
    cursor = journal.open_folder(TENANT, USER.key, inbox, 7, source_count=1)
    journal.set_folder_modseq(TENANT, USER.key, "INBOX", 7, 42)
    when = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    entry = LedgerEntry("INBOX", 7, 3, "a" * 64, 300, when, frozenset(), "<m@acme.test>")
    journal.record_batch(TENANT, USER.key, cursor, [entry], 3)
    ids = [e.id for e in journal.entries(TENANT, USER.key) if e.id is not None]
    journal.set_load_state(ids, LoadState.failed, error_code="SXM-DST-004", error_detail="big")

    (folder,) = journal.folder_rows(TENANT, USER.key)
    assert isinstance(folder, state.FolderRow)
    assert (folder.folder, folder.uidvalidity, folder.highest_uid) == ("INBOX", 7, 3)
    assert folder.special is SpecialFolder.inbox
    assert (folder.modseq, folder.source_count, folder.dest_folder) == (42, 1, None)
    assert folder.updated_at is not None
    assert folder.updated_at.tzinfo is not None
    (problem,) = journal.item_errors(TENANT)
    assert problem == state.ItemProblem(
        USER.key, "INBOX", 7, 3, 300, "<m@acme.test>", "SXM-DST-004", "big"
    )
    with pytest.raises(FrozenInstanceError):
        folder.highest_uid = 0  # type: ignore[misc]
    (tally,) = journal.message_tallies(TENANT)
    assert tally == state.MessageTally(USER.key, LoadState.failed, True, 1, 300)
    assert journal.item_class_tallies(TENANT) == [state.ItemClassTally(USER.key, ItemClass.mail, 1)]
    assert journal.folder_counts(TENANT) == {USER.key: 1}


def test_service_changes_and_commands_come_back_as_records(journal: Journal) -> None:
    first = journal.record_change(TENANT, "account-locked", USER.key, "omon -u kim")
    second = journal.record_change(TENANT, "service-stopped", "imap", "omon imap")
    journal.mark_undone(first)
    journal.log_command(TENANT, "scalix.acme.test", "omshowu -n kim", 0, 0.25)

    (change,) = journal.pending_undos(TENANT)
    assert isinstance(change, state.ServiceChange)
    assert (change.id, change.kind, change.undo_command) == (second, "service-stopped", "omon imap")
    assert change.done_at.tzinfo is not None
    assert change.undone_at is None
    (command,) = journal.commands(TENANT)
    assert isinstance(command, state.CommandRecord)
    assert (command.host, command.command, command.exit_status) == (
        "scalix.acme.test",
        "omshowu -n kim",
        0,
    )
    assert command.at.tzinfo is not None
