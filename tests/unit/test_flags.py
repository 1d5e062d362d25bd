from __future__ import annotations

from scalix_migrate.config import DEFAULT_FLAG_MAP
from scalix_migrate.flags import comparable, is_deleted, is_valid_keyword, map_flags


def test_scalix_flags_are_mapped_and_dropped_by_the_default_table() -> None:
    got = map_flags(
        {"\\Seen", "\\X-Forwarded", "\\X-Has-Attach", "X-Scalix-Processed", "\\Recent"},
        DEFAULT_FLAG_MAP,
        keywords_allowed=True,
    )
    assert got.flags == {"\\Seen", "$Forwarded"}
    assert got.dropped == {"\\X-Has-Attach", "X-Scalix-Processed", "\\Recent"}


def test_system_flags_are_kept_and_canonicalised() -> None:
    got = map_flags(
        {"\\seen", "\\ANSWERED", "\\Flagged", "\\Draft", "\\Deleted"}, {}, keywords_allowed=False
    )
    assert got.flags == {"\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted"}


def test_unknown_backslash_flags_and_invalid_keywords_are_dropped() -> None:
    got = map_flags({"\\Bogus", "Projekt X", "Größe", "ok_kw"}, {}, keywords_allowed=True)
    assert got.flags == {"ok_kw"}
    assert got.dropped == {"\\Bogus", "Projekt X", "Größe"}


def test_keywords_are_dropped_where_the_destination_refuses_them() -> None:
    got = map_flags(
        {"\\Seen", "$Label1", "\\X-Forwarded"}, DEFAULT_FLAG_MAP, keywords_allowed=False
    )
    assert got.flags == {"\\Seen"}
    assert got.dropped == {"$Label1", "\\X-Forwarded"}


def test_table_matches_backslash_flags_case_insensitively() -> None:
    got = map_flags({"\\x-forwarded"}, DEFAULT_FLAG_MAP, keywords_allowed=True)
    assert got.flags == {"$Forwarded"}


def test_helpers() -> None:
    assert is_deleted({"\\DELETED"})
    assert not is_deleted({"\\Seen"})
    assert is_valid_keyword("$Forwarded")
    assert not is_valid_keyword("a]b")
    assert comparable({"\\Recent", "\\seen", "kw"}) == {"\\Seen", "kw"}
