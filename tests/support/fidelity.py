"""Independent end-to-end check: every source message is at the destination exactly once.

The source is read again over IMAP (not from the journal or the staging store); the
destination through its own adapter. Per folder, the multisets of (SHA-256 of the bytes,
flags as the tool must map them, INTERNALDATE to the second) must be equal.
"""

from __future__ import annotations

from collections import Counter

from scalix_migrate.config import TenantConfig
from scalix_migrate.flags import comparable, is_deleted, map_flags
from scalix_migrate.records import FetchedMessage, ScalixUser
from scalix_migrate.staging import sha256_hex
from scalix_migrate.state import Journal
from scalix_migrate.user_context import open_destination, open_source

Key = tuple[str, frozenset[str], int]


def source_folders(cfg: TenantConfig, user: ScalixUser) -> dict[str, Counter[Key]]:
    """What the destination must hold, per source folder, read from the source now."""
    out: dict[str, Counter[Key]] = {}
    with open_source(cfg, user) as src:
        for folder in src.list_folders():
            if not folder.selectable:
                continue
            src.examine(folder)
            infos = list(src.message_info(folder, src.uids_above(folder, 0)))
            expected: Counter[Key] = Counter()
            for batch in src.fetch(folder, infos):
                for m in batch:
                    assert isinstance(m, FetchedMessage), f"source fetch failed: {m}"
                    if cfg.options.messages.skip_deleted and is_deleted(m.flags):
                        continue
                    flags = map_flags(m.flags, cfg.options.flags.map, keywords_allowed=True).flags
                    expected[
                        (sha256_hex(m.body), comparable(flags), int(m.internaldate.timestamp()))
                    ] += 1
            out[folder.name] = expected
    return out


def assert_user_migrated_exactly(cfg: TenantConfig, journal: Journal, user: ScalixUser) -> int:
    """Assert every message of ``user`` arrived once, byte-identical; return how many."""
    expected = source_folders(cfg, user)
    dest_names = {r.folder: r.dest_folder for r in journal.folder_rows(cfg.tenant, user.key)}
    unplanned = set(expected) - set(dest_names)
    assert not unplanned, f"folders never planned: {unplanned}"
    total = 0
    with open_destination(cfg, user) as dest:
        for folder, wanted in expected.items():
            dest_name = dest_names[folder] or folder
            got: Counter[Key] = Counter()
            for m in dest.messages(dest_name):
                assert m.sha256 is not None
                assert m.internaldate is not None
                got[(m.sha256, comparable(m.flags), int(m.internaldate.timestamp()))] += 1
            missing, extra = wanted - got, got - wanted
            assert (not missing, not extra) == (True, True), (
                f"{user.key} {folder} -> {dest_name}: {sum(missing.values())} missing, "
                f"{sum(extra.values())} extra; missing={list(missing)[:3]} extra={list(extra)[:3]}"
            )
            total += sum(wanted.values())
    return total
