"""Destination faults during the load, from a TCP proxy in front of the real Dovecot.

Each case migrates one user's mailbox through the proxy and asserts the end state: every
message at the destination exactly once (bytes, flags, INTERNALDATE), the reconnects or
retries counted in the users table and the report, and the whole run inside its timeouts.
"""

from __future__ import annotations

import csv
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scalix_migrate.sandbox.directory import SeedMessage
from scalix_migrate.steps import journal_for
from tests.integration.scalix_bed import TenantSlice, config
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.fidelity import assert_user_migrated_exactly
from tests.support.migrate import migrate_all

N = 24


def _seed(bed: TenantSlice) -> str:
    u = bed.new_user("dst")
    t0 = datetime(2020, 1, 1, 9, 0, tzinfo=UTC)
    bed.testbed.seed_messages(
        u.addresses[0],
        [
            SeedMessage(
                folder="INBOX" if i % 3 else "Sent Items",
                body=(
                    b"Subject: m%d\r\nMessage-ID: <m%d-%s@x>\r\n\r\n" % (i, i, u.auth_id.encode())
                    + b"line of text\r\n" * (50 * (i % 5 + 1))
                ),
                flags=["\\Seen"] if i % 2 else ["\\Flagged", "$Label1"],
                internaldate=t0 + timedelta(hours=i),
            )
            for i in range(N)
        ],
    )
    return u.addresses[0]


CASES = {
    # The server stored the APPEND; the connection dies before the client reads OK [APPENDUID].
    "drop-after-appenduid": (Fault(drop_on=b"[APPENDUID"), 2),
    # The connection dies while the client is sending an APPEND: a message half sent.
    "cut-mid-append": (Fault(cut_upload_on=b"APPEND "), 2),
    # The stored APPEND's answer never comes: the client's read timeout must end it.
    "stall-after-appenduid": (Fault(stall_on=b"[APPENDUID"), 2),
    # Slow but alive: everything arrives 512 bytes at a time.
    "trickle": (Fault(trickle=(512, 0.001)), None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_destination_fault_ends_exact_and_counted(
    case: str, bed: TenantSlice, dest_proxy: FaultProxy, tmp_path: Path
) -> None:
    fault, times = CASES[case]
    who = _seed(bed)
    tag = uuid.uuid4().hex[:6]
    cfg = config(
        bed,
        tmp_path,
        source={"test_user": who},
        options={"users": {"include": [who]}},
        destination={
            "type": "imap",
            "host": "127.0.0.1",
            "port": dest_proxy.port,
            "tls": "none",
            "timeout_s": 3,
            "password": bed.testbed.dest_password,
            "login_template": f"{{local_part}}-{tag}@dest.test",
            "preset": "dovecot",
        },
    )
    dest_proxy.always(fault, times=times)
    started = time.monotonic()
    (user,) = migrate_all(cfg)
    took = time.monotonic() - started
    assert dest_proxy.faults_fired >= (times or 0)
    dest_proxy.disarm()

    with journal_for(cfg) as journal:
        assert assert_user_migrated_exactly(cfg, journal, user) == N
        (row,) = [r for r in journal.user_rows(cfg.tenant) if r.user_key == user.key]
    assert row.status == "done"
    with (cfg.options.reports_dir / "users.csv").open(encoding="utf-8") as fh:
        (reported,) = [r for r in csv.DictReader(fh) if r["user"] == user.key]
    assert (int(reported["retries"]), int(reported["reconnects"])) == (row.retries, row.reconnects)
    if times:
        assert row.retries + row.reconnects >= 1, "the faults left no trace"
    else:
        assert (row.retries, row.reconnects) == (0, 0)
    assert took < 90
