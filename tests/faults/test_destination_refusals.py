"""Destination refusals on the real destination Dovecot, each handled as designed and
reported with the item (message, folder or user) named."""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate import steps
from scalix_migrate.errors import UserError
from scalix_migrate.report import write_reports
from scalix_migrate.sandbox.directory import SeedMessage
from scalix_migrate.steps import journal_for
from tests.integration.scalix_bed import TenantSlice, config
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.fidelity import assert_user_migrated_exactly
from tests.support.migrate import migrate_all
from tests.testbed import dovecot

T0 = datetime(2022, 2, 2, 8, 0, tzinfo=UTC)


def _seed(bed: TenantSlice, sizes: list[int], folder: str = "INBOX") -> str:
    u = bed.new_user("ref")
    bed.testbed.seed_messages(
        u.addresses[0],
        [
            SeedMessage(
                folder,
                b"Subject: r%d\r\nMessage-ID: <r%d-%s@x>\r\n\r\n" % (i, i, u.auth_id.encode())
                + b"z" * size
                + b"\r\n",
                [],
                T0 + timedelta(minutes=i),
            )
            for i, size in enumerate(sizes)
        ],
    )
    return u.addresses[0]


def _cfg(bed: TenantSlice, tmp_path: Path, who: str, *, port: int | None = None, **dest: Any):  # type: ignore[no-untyped-def]
    return config(
        bed,
        tmp_path,
        source={"test_user": who},
        options={"users": {"include": [who]}, **dest.pop("options", {})},
        destination={
            "type": "imap",
            "host": "127.0.0.1",
            "port": port or bed.testbed.dest_imap_port,
            "tls": "none",
            "timeout_s": 5,
            "password": bed.testbed.dest_password,
            "preset": "dovecot",
            **dest,
        },
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_one_message_too_big_is_an_item_error_named_and_the_rest_goes_on(
    bed: TenantSlice, tmp_path: Path
) -> None:
    who = _seed(bed, [100, 20_000, 200])  # the destination login takes at most 8 KiB a message
    cfg = _cfg(bed, tmp_path, who, login_template=dovecot.TOOBIG_LOGIN)
    (user,) = migrate_all(cfg)
    (failure,) = _rows(cfg.options.reports_dir / "failures.csv")
    assert (failure["user_key"], failure["folder"], failure["uid"]) == (user.key, "INBOX", "2")
    assert failure["error_code"] == "SXM-DST-004"
    assert failure["error_detail"]
    (row,) = [r for r in _rows(cfg.options.reports_dir / "users.csv") if r["user"] == user.key]
    assert (row["loaded"], row["failed"]) == ("2", "1")
    got = bed.testbed.dest_messages(dovecot.TOOBIG_LOGIN, "INBOX")
    assert sum(1 for m in got if user.key.encode() in m.body) == 2


def test_over_quota_fails_the_user_with_its_code_in_the_report(
    bed: TenantSlice, tmp_path: Path
) -> None:
    who = _seed(bed, [12_000] * 8)  # 96 KB against a 64 KiB quota
    cfg = _cfg(bed, tmp_path, who, login_template=dovecot.OVERQUOTA_LOGIN)
    discovery = steps.discover_step(cfg)
    (user,) = discovery.users
    steps.extract_step(cfg, user)
    with pytest.raises(UserError) as refused:
        steps.load_step(cfg, user)
    assert refused.value.code == "SXM-DST-003"
    assert refused.value.user == user.key
    with journal_for(cfg) as journal:
        files = write_reports(journal, cfg.tenant, cfg.options.reports_dir)
    (row,) = [r for r in files.users if r["user"] == user.key]
    assert (row["status"], row["error_code"]) == ("failed", "SXM-DST-003")


def test_bye_after_a_stored_batch_is_reconciled_nothing_doubled(
    bed: TenantSlice, dest_proxy: FaultProxy, tmp_path: Path
) -> None:
    who = _seed(bed, [500 * (i % 4 + 1) for i in range(30)])
    tag = uuid.uuid4().hex[:6]
    cfg = _cfg(
        bed,
        tmp_path,
        who,
        port=dest_proxy.port,
        login_template=f"{{local_part}}-{tag}@dest.test",
        connections_per_user=1,
    )
    # Dovecot stored the batch; the client reads "* BYE" instead of the OK, then EOF.
    bye = Fault(drop_on=b"[APPENDUID", say_instead=b"* BYE Server shutting down.\r\n")
    dest_proxy.always(bye, times=1)
    (user,) = migrate_all(cfg)
    assert dest_proxy.faults_fired == 1
    dest_proxy.disarm()
    with journal_for(cfg) as journal:
        assert assert_user_migrated_exactly(cfg, journal, user) == 30
        (row,) = [r for r in journal.user_rows(cfg.tenant) if r.user_key == user.key]
    assert row.retries + row.reconnects >= 1


def test_a_folder_the_destination_cannot_create_fails_the_user_naming_it(
    bed: TenantSlice, tmp_path: Path
) -> None:
    who = _seed(bed, [10, 20], folder="Projects")
    long_name = "x" * 300  # one level longer than a file name may be: Dovecot refuses it
    tag = uuid.uuid4().hex[:6]
    cfg = _cfg(
        bed,
        tmp_path,
        who,
        login_template=f"{{local_part}}-{tag}@dest.test",
        options={"folders": {"renames": [{"pattern": "^Projects$", "replacement": long_name}]}},
    )
    discovery = steps.discover_step(cfg)
    (user,) = discovery.users
    steps.extract_step(cfg, user)
    with pytest.raises(UserError) as refused:
        steps.load_step(cfg, user)
    assert refused.value.code == "SXM-DST-007"
    assert refused.value.folder == long_name
    with journal_for(cfg) as journal:
        (row,) = [r for r in journal.user_rows(cfg.tenant) if r.user_key == user.key]
    assert row.error_code == "SXM-DST-007"
    assert long_name in (row.error_message or "")
