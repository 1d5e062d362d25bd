"""options.users include/exclude and a run's users: names, addresses or fnmatch patterns."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import pytest

from scalix_migrate.config import Selection
from scalix_migrate.discovery import UserPatterns, matches, select_users
from scalix_migrate.records import ScalixUser


def user(i: int) -> ScalixUser:
    return ScalixUser(display_name=f"User {i}", mailnode="sales", addresses=(f"u{i}@example.test",))


@pytest.fixture
def fnmatch_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real: Callable[[str, str], bool] = fnmatch.fnmatchcase

    def counting(name: str, pattern: str) -> bool:
        calls[0] += 1
        return real(name, pattern)

    monkeypatch.setattr(fnmatch, "fnmatchcase", counting)
    return calls


def test_listed_addresses_are_looked_up_not_globbed(fnmatch_calls: list[int]) -> None:
    """A tenant listing its users by address: one pass over the users (5,000 users x 5,000
    addresses was 25 million fnmatch calls, ~80 s of discovery)."""
    users = [user(i) for i in range(300)]
    include = [f"U{i}@Example.test " for i in range(0, 300, 2)] + ["nobody@example.test"]
    chosen, unmatched = select_users(users, Selection(include=include, exclude=["u4@example.test"]))
    assert [u.addresses[0] for u in chosen] == [
        f"u{i}@example.test" for i in range(0, 300, 2) if i != 4
    ]
    assert unmatched == ["nobody@example.test"]
    assert fnmatch_calls[0] == 0


def test_patterns_match_as_fnmatch_case_insensitively(fnmatch_calls: list[int]) -> None:
    users = [user(i) for i in range(30)]
    chosen, unmatched = select_users(
        users, Selection(include=["U1*@EXAMPLE.TEST", "user 2?", "x*"], exclude=["u1[0-4]@*"])
    )
    assert sorted(u.display_name for u in chosen) == sorted(
        [f"User {i}" for i in (1, 15, 16, 17, 18, 19)] + [f"User {i}" for i in range(20, 30)]
    )
    assert unmatched == ["x*"]
    assert 0 < fnmatch_calls[0] <= 30 * 4 * 4  # users x identities x wildcard patterns


def test_every_spelling_of_a_pattern_counts_as_matched() -> None:
    hits = UserPatterns(["U1@example.test", "u1@EXAMPLE.test", "user 1"]).hits(user(1))
    assert sorted(hits) == sorted(["U1@example.test", "u1@EXAMPLE.test", "user 1"])
    assert matches(user(1), " USER 1 ")
    assert not matches(user(1), "user 11")
