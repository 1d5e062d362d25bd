"""The tenant flow end to end on the real-server test bed: Dovecot (as Scalix) -> Dovecot.

Discovery runs over OpenSSH against the admin-command emulators, extraction over IMAP with the
mboxadmin login, the load into a second Dovecot; then every message is compared byte for byte
with the source, read again independently.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from flows.migrate_tenant import migrate_tenant
from scalix_migrate.config import TenantConfig
from scalix_migrate.discovery import discover_users
from scalix_migrate.records import ScalixUser
from scalix_migrate.sandbox.directory import DirectoryUser, FolderSpec, SeedMessage
from scalix_migrate.state import UserStatus
from scalix_migrate.steps import journal_for
from tests.support.corpus import tricky_corpus
from tests.support.fidelity import assert_user_migrated_exactly
from tests.testbed.bed import scalix_default_folders

pytestmark = pytest.mark.usefixtures("prefect_server", "fast_retries")

FOLDERS = ["INBOX", "Sent Items", "INBOX/Projekte/Größe", "Archiv/2019"]


def _add_users(testbed: Any, tag: str, n: int) -> list[str]:
    """n fresh users, on a mailnode of their own (discovery then runs the per-user admin
    commands for them only), with the tricky corpus over nested, non-ASCII folders."""
    mailnode = f"flow-{tag}"
    testbed.update_directory(lambda d: d.mailnodes.append(mailnode))
    addresses = []
    for i in range(n):
        address = f"flow{i}-{tag}@primary.test"
        testbed.add_user(
            DirectoryUser(
                display_name=f"Flow {i} {tag}",
                mailnode=mailnode,
                auth_id=address,
                addresses=[address],
                password=uuid.uuid4().hex,
                folders=[
                    *scalix_default_folders(),
                    FolderSpec("INBOX/Projekte"),
                    FolderSpec("INBOX/Projekte/Größe"),
                    FolderSpec("Archiv"),
                    FolderSpec("Archiv/2019"),
                ],
            )
        )
        zones = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7))]
        seed = [
            SeedMessage(
                folder=FOLDERS[j % len(FOLDERS)],
                body=body,
                flags=flags,
                internaldate=datetime(
                    2019 + j % 5, 1 + j % 12, 1 + j, 8, j, 30, tzinfo=zones[j % 3]
                ),
            )
            for j, (body, flags) in enumerate(tricky_corpus() * 3)
        ]
        testbed.seed_messages(address, seed)
        addresses.append(address)
    return addresses


def _config(testbed: Any, tmp_path: Path, tag: str, addresses: list[str]) -> TenantConfig:
    _, cfg = testbed.make_config(
        tmp_path,
        destination={
            "type": "imap",
            "login_template": f"{{local_part}}-{tag}@dest.test",
            "preset": "dovecot",
        },
        source={"server_names": [f"flow-{tag}"], "test_user": addresses[0]},
        options={"concurrency": {"users": 2}},
    )
    return cfg  # type: ignore[no-any-return]


def _users(cfg: TenantConfig) -> list[ScalixUser]:
    return discover_users(cfg).users


def test_dovecot_to_dovecot_every_message_identical_rerun_and_delta(
    testbed: Any, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    addresses = _add_users(testbed, tag, 3)
    cfg = _config(testbed, tmp_path, tag, addresses)

    state = migrate_tenant(config=cfg, return_state=True)

    assert state.is_completed(), state.message
    assert "3 of 3 users migrated" in (state.message or "")
    users = _users(cfg)
    with journal_for(cfg) as journal:
        moved = [assert_user_migrated_exactly(cfg, journal, u) for u in users]
        before = journal.counts_by_state(cfg.tenant)
    assert moved == [3 * len(tricky_corpus())] * 3

    rerun = migrate_tenant(config=cfg, return_state=True)

    assert rerun.is_completed(), rerun.message
    with journal_for(cfg) as journal:
        assert journal.counts_by_state(cfg.tenant) == before  # nothing appended again
        for u in users:
            assert_user_migrated_exactly(cfg, journal, u)

    late = SeedMessage(
        folder="INBOX",
        body=b"Subject: late\r\nMessage-ID: <late@x>\r\n\r\nnew\r\n",
        flags=["\\Flagged"],
        internaldate=datetime(2024, 6, 1, tzinfo=UTC),
    )
    testbed.seed_messages(addresses[0], [late])

    delta = migrate_tenant(config=cfg, phase="delta", return_state=True)

    assert delta.is_completed(), delta.message
    with journal_for(cfg) as journal:
        after = journal.counts_by_state(cfg.tenant)
        assert after["loaded"] == before["loaded"] + 1
        for u in users:
            assert_user_migrated_exactly(cfg, journal, u)

    # A finished user creates a folder whose name holds Scalix's separator (the stand-in
    # shows it as "\"). The next run's preflight leaves finished users' folder names to their
    # transfer: that user is refused before anything is read, the others go on.
    testbed.seed_messages(
        addresses[1],
        [SeedMessage("Q1\\Q2 report", late.body, [], datetime(2024, 6, 2, tzinfo=UTC))],
    )
    again = migrate_tenant(config=cfg, phase="delta", return_state=True)

    assert again.is_failed()
    assert "1 of 3 users failed" in (again.message or ""), again.message
    with journal_for(cfg) as journal:
        assert journal.users_with_status(cfg.tenant, UserStatus.failed) == [addresses[1]]
        row = next(r for r in journal.user_rows(cfg.tenant) if r.user_key == addresses[1])
        assert row.error_code == "SXM-USR-004"
        assert journal.counts_by_state(cfg.tenant) == after  # nothing of it was read
