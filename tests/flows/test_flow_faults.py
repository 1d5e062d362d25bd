"""The tenant flow under faults injected by a TCP proxy, with the default retry policy."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flows.migrate_tenant import migrate_tenant
from scalix_migrate.config import TenantConfig
from scalix_migrate.discovery import discover_users
from scalix_migrate.sandbox.directory import DirectoryUser, SeedMessage
from scalix_migrate.steps import journal_for
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.fidelity import assert_user_migrated_exactly
from tests.testbed.bed import scalix_default_folders

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("prefect_server")]

POISON = b"X-Poison: d41d8cd98f00b204"


@pytest.fixture
def source_proxy(testbed: Any) -> Iterator[FaultProxy]:
    with FaultProxy(testbed.imap_port) as proxy:
        yield proxy


def _user(testbed: Any, mailnode: str, local: str, bodies: list[bytes]) -> str:
    address = f"{local}@primary.test"
    testbed.add_user(
        DirectoryUser(
            display_name=local.title(),
            mailnode=mailnode,
            auth_id=address,
            addresses=[address],
            password=uuid.uuid4().hex,
            folders=scalix_default_folders(),
        )
    )
    testbed.seed_messages(
        address,
        [
            SeedMessage(
                folder="INBOX", body=b, flags=[], internaldate=datetime(2023, 1, 1, tzinfo=UTC)
            )
            for b in bodies
        ],
    )
    return address


def _config(testbed: Any, tmp_path: Path, mailnode: str, test_user: str, port: int) -> TenantConfig:
    _, cfg = testbed.make_config(
        tmp_path,
        destination={"type": "maildir", "path": str(tmp_path / "out" / "{email}")},
        source={
            "server_names": [mailnode],
            "test_user": test_user,
            "imap": {"port": port},
        },
    )
    return cfg  # type: ignore[no-any-return]


@pytest.mark.timeout(150)
def test_a_user_that_cannot_be_read_fails_in_well_under_a_minute_and_the_run_goes_on(
    testbed: Any, tmp_path: Path, source_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    tag = uuid.uuid4().hex[:6]
    mailnode = f"fault-{tag}"
    testbed.update_directory(lambda d: d.mailnodes.append(mailnode))
    good = _user(
        testbed, mailnode, f"good-{tag}", [b"Subject: fine %d\r\n\r\nok\r\n" % i for i in range(5)]
    )
    bad = _user(
        testbed,
        mailnode,
        f"bad-{tag}",
        [b"Subject: one\r\n\r\nok\r\n", b"Subject: two\r\n" + POISON + b"\r\n\r\nx\r\n"],
    )
    # Every connection is cut as the poisoned message comes down: a permanent source fault
    # for that one user (preflight and the other user never read it).
    source_proxy.always(Fault(drop_on=POISON))
    cfg = _config(testbed, tmp_path, mailnode, good, source_proxy.port)

    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        state = migrate_tenant(config=cfg, return_state=True)
    took = time.monotonic() - started

    assert state.is_failed()
    assert f"1 of 2 users failed: ['{bad}']" in (state.message or "")
    assert took < 60, f"the run took {took:.0f} s"
    waits = [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]
    assert len(waits) == cfg.options.retries.attempts, waits
    assert all(f"transfer-{bad}" in w for w in waits)
    assert source_proxy.faults_fired >= cfg.options.retries.attempts + 1

    source_proxy.disarm()
    with journal_for(cfg) as journal:
        rows = {r.user_key: r for r in journal.user_rows(cfg.tenant)}
        assert rows[good].status == "done"
        assert rows[bad].status == "failed"
        assert rows[bad].error_code == "SXM-IMAP-007"  # a lost connection, not "unreachable"
        assert rows[bad].retries == cfg.options.retries.attempts  # every retry counted
        assert (rows[good].retries, rows[good].reconnects) == (0, 0)
        users = {u.key: u for u in discover_users(cfg).users}
        assert assert_user_migrated_exactly(cfg, journal, users[good]) == 5
