"""Source faults during extraction, and the source left exactly as it was.

The proxy stands in front of the real Dovecot that plays Scalix. Each fault case migrates
one user and asserts every message arrived once; the last test compares the source's
flags, counts, UIDNEXT and UIDVALIDITY before and after a full and a delta run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.sandbox.directory import SeedMessage
from scalix_migrate.steps import journal_for
from tests.integration.scalix_bed import TenantSlice, config
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.fidelity import assert_user_migrated_exactly
from tests.support.migrate import migrate_all
from tests.testbed.imap import login

FOLDERS = ["INBOX", "Sent Items", "Archiv/2019"]
N = 18


def _seed(bed: TenantSlice, n: int = N, start: int = 0, who: str | None = None) -> str:
    if who is None:
        u = bed.new_user("src")
        who = u.addresses[0]
    t0 = datetime(2019, 6, 1, 12, 0, tzinfo=UTC)
    bed.testbed.seed_messages(
        who,
        [
            SeedMessage(
                folder=FOLDERS[i % 3],
                body=b"Subject: s%d\r\nMessage-ID: <s%d-%s@x>\r\n\r\n" % (i, i, who.encode())
                + b"MARKER-BODY text\r\n" * (30 * (i % 4 + 1)),
                flags=[] if i % 3 else ["\\Seen", "$Label2"],
                internaldate=t0 + timedelta(minutes=i),
            )
            for i in range(start, start + n)
        ],
    )
    return who


def _cfg(bed: TenantSlice, tmp_path: Path, who: str, port: int, **imap: Any) -> TenantConfig:
    return config(
        bed,
        tmp_path,
        source={"test_user": who, "imap": {"port": port, "timeout_s": 3, **imap}},
        options={"users": {"include": [who]}},
        destination={"type": "maildir", "path": str(tmp_path / "out" / "{email}")},
    )


CASES = {
    # A FETCH of bodies cut as the first body comes down, on two connections in a row.
    "drop-mid-fetch": (Fault(drop_on=b"MARKER-BODY"), 2),
    # The server goes quiet in the middle of a FETCH: the read timeout ends it.
    "stall-mid-fetch": (Fault(stall_on=b"MARKER-BODY"), 1),
    # Slow but alive.
    "trickle": (Fault(trickle=(700, 0.001)), None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_source_fault_ends_exact(
    case: str, bed: TenantSlice, source_proxy: FaultProxy, tmp_path: Path
) -> None:
    fault, times = CASES[case]
    who = _seed(bed)
    cfg = _cfg(bed, tmp_path, who, source_proxy.port)
    source_proxy.always(fault, times=times)
    started = time.monotonic()
    (user,) = migrate_all(cfg)
    took = time.monotonic() - started
    assert source_proxy.faults_fired == (times or 0)
    source_proxy.disarm()
    with journal_for(cfg) as journal:
        assert assert_user_migrated_exactly(cfg, journal, user) == N
        (row,) = [r for r in journal.user_rows(cfg.tenant) if r.user_key == user.key]
    assert row.status == "done"
    assert row.retries == (times or 0)  # each fault cost one retry of the extract step
    assert took < 60


def _source_state(testbed: Any, who: str) -> dict[str, Any]:
    """Per folder: STATUS counters, and (UID, flags, INTERNALDATE, size) of every message."""
    out: dict[str, Any] = {}
    with login(
        testbed.imap_port, f"mboxadmin:{testbed.admin_user}:{who}", testbed.admin_password
    ) as c:
        for attrs, _, name in c.list_folders():
            if b"\\Noselect" in attrs or b"\\NoSelect" in attrs:
                continue  # a level of the hierarchy (Archiv of Archiv/2019), not a mailbox
            status = c.folder_status(name, [b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN"])
            c.select_folder(name, readonly=True)
            uids = c.search("ALL")
            meta = c.fetch(uids, ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]) if uids else {}
            out[name] = (
                dict(status),
                sorted(
                    (
                        u,
                        tuple(sorted(m[b"FLAGS"])),
                        m[b"INTERNALDATE"].timestamp(),
                        m[b"RFC822.SIZE"],
                    )
                    for u, m in meta.items()
                ),
            )
    return out


def test_the_source_is_never_written_by_a_full_or_a_delta_run(
    bed: TenantSlice, testbed: Any, tmp_path: Path
) -> None:
    who = _seed(bed)
    cfg = _cfg(bed, tmp_path, who, testbed.imap_port)
    before = _source_state(testbed, who)
    assert sum(s[0][b"UNSEEN"] for s in before.values()) > 0

    (user,) = migrate_all(cfg)
    assert _source_state(testbed, who) == before, "the full run changed the source"

    _seed(bed, n=4, start=N, who=who)  # new mail arrives between the runs
    grown = _source_state(testbed, who)
    migrate_all(cfg, phase="delta")
    assert _source_state(testbed, who) == grown, "the delta run changed the source"
    with journal_for(cfg) as journal:
        assert assert_user_migrated_exactly(cfg, journal, user) == N + 4
    assert _source_state(testbed, who) == grown, "verification changed the source"
