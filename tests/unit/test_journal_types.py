"""The journal's own types: the user status enum, the records its queries return, and one
journal (engine, schema check, column inspection) per process and URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scalix_migrate import state
from scalix_migrate.records import ScalixUser
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
