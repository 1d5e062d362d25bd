"""Load end to end against the test bed's Dovecot destination (engineer A's ``testbed``).

* Dovecot -> Dovecot over a corpus of tricky real-world messages: a source mailbox on the
  server is read back (BODY.PEEK[], FLAGS, INTERNALDATE) into the journal and staging store,
  loaded into another mailbox, and every message compared byte for byte, with flags and
  INTERNALDATE.
* ``kill -9`` during a load (in a subprocess), then a rerun: every message exactly once, with
  one destination connection and with three.
* Over quota fails the user (SXM-DST-003); a message the server refuses is an item error.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from scalix_migrate.config import TenantConfig, parse_config
from scalix_migrate.errors import UserError
from scalix_migrate.load import load_user
from scalix_migrate.message_identity import message_id_of
from scalix_migrate.records import FolderCursor, LedgerEntry, ScalixUser, SourceFolder
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import Journal
from scalix_migrate.verify import verify_user
from tests.contract.conftest import config_text
from tests.support.corpus import tricky_corpus

pytestmark = pytest.mark.testbed

CRLF = b"\r\n"


def _client(testbed: Any, login: str) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=testbed.dest_imap_port, ssl=False, timeout=30)
    c.normalise_times = False
    c.login(login, testbed.dest_password)
    return c


def _config(
    tmp_path: Path, testbed: Any, tag: str, *, dest_extra: str = "", **options: Any
) -> tuple[Path, TenantConfig]:
    secret = tmp_path / "dest-password"
    secret.write_text(testbed.dest_password)
    block = (
        textwrap.dedent(
            f"""\
        destination:
          type: imap
          host: 127.0.0.1
          port: {testbed.dest_imap_port}
          tls: none
          preset: dovecot
          login_template: "{{local_part}}-{tag}@dest.test"
          password: "file:{secret}"
        """
        )
        + dest_extra
    )
    text = config_text(tmp_path, block, **options) + f"  state:\n    dir: {tmp_path / 'state'}\n"
    path = tmp_path / "tenant.yaml"
    path.write_text(text)
    return path, parse_config(text)


def _user(local: str) -> ScalixUser:
    return ScalixUser(display_name=local, mailnode="mail", addresses=(f"{local}@example.com",))


def _extract(
    cfg: TenantConfig, journal: Journal, user: ScalixUser, client: IMAPClient, folder: str
) -> int:
    """A minimal extract: the source folder's messages into the journal and staging store."""
    info = client.select_folder(folder, readonly=True)
    uidvalidity = int(info[b"UIDVALIDITY"])
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
    src = SourceFolder(folder, folder, "/", frozenset())
    cursor: FolderCursor = journal.open_folder(cfg.tenant, user.key, src, uidvalidity)
    fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
    entries = []
    for uid, data in sorted(fetched.items()):
        body = data[b"BODY[]"]
        entries.append(
            LedgerEntry(
                folder=folder,
                uidvalidity=uidvalidity,
                uid=uid,
                sha256=store.put(body),
                size=len(body),
                internaldate=data[b"INTERNALDATE"],
                flags=frozenset(f.decode() for f in data[b"FLAGS"]) - {"\\Recent"},
                message_id=message_id_of(body),
            )
        )
    journal.record_batch(cfg.tenant, user.key, cursor, entries, max(fetched, default=0))
    return len(entries)


def _snapshot(client: IMAPClient, folder: str) -> list[tuple[str, frozenset[str], float]]:
    client.select_folder(folder, readonly=True)
    got = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
    return sorted(
        (
            hashlib.sha256(d[b"BODY[]"]).hexdigest(),
            frozenset(f.decode() for f in d[b"FLAGS"]) - {"\\Recent"},
            d[b"INTERNALDATE"].timestamp(),
        )
        for d in got.values()
    )


def test_dovecot_to_dovecot_every_message_identical(testbed: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    _, cfg = _config(tmp_path, testbed, tag)
    user = _user("kim")
    zones = [timezone(timedelta(hours=h)) for h in (-7, 0, 2, 5, 9)]
    with _client(testbed, f"src-{tag}@dest.test") as src:
        src.create_folder("Archiv/2019 & Größe")
        for i, (body, flags) in enumerate(tricky_corpus()):
            when = datetime(2015 + i, 1 + i, 1 + i, i, 2 * i, 3 * i % 60, tzinfo=zones[i % 5])
            for folder in ("INBOX", "Archiv/2019 & Größe"):
                src.append(folder, body, flags, when)
        with Journal.open(directory=tmp_path / "state") as journal:
            assert _extract(cfg, journal, user, src, "INBOX") == 8
            assert _extract(cfg, journal, user, src, "Archiv/2019 & Größe") == 8
            first = load_user(cfg, journal, user)
            assert (first.appended, first.failed) == (16, 0)
            assert load_user(cfg, journal, user).appended == 0
            result = verify_user(cfg, journal, user)
            assert result.ok, result.differences
        with _client(testbed, f"kim-{tag}@dest.test") as dst:
            for folder in ("INBOX", "Archiv/2019 & Größe"):
                assert _snapshot(dst, folder) == _snapshot(src, folder)


KILL_SCRIPT = textwrap.dedent(
    """\
    import sys
    from scalix_migrate.config import load_config
    from scalix_migrate.load import load_user
    from scalix_migrate.records import ScalixUser
    from scalix_migrate.state import Journal
    cfg = load_config(sys.argv[1])
    user = ScalixUser(display_name="kim", mailnode="mail", addresses=("kim@example.com",))
    with Journal.open(directory=cfg.options.state.dir) as journal:
        load_user(cfg, journal, user)
    """
)


def _stage_many(cfg: TenantConfig, journal: Journal, user: ScalixUser, n: int) -> list[str]:
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
    cursor = journal.open_folder(
        cfg.tenant, user.key, SourceFolder("INBOX", "INBOX", "/", frozenset()), 1
    )
    entries, hashes = [], []
    for i in range(n):
        mid = b"" if i % 7 == 0 else f"Message-ID: <m{i % 50}@example.com>\r\n".encode()
        body = mid + f"Subject: {i}\r\nDate: d{i}\r\n\r\n".encode() + b"y" * (2000 + i) + CRLF
        hashes.append(store.put(body))
        entries.append(
            LedgerEntry(
                "INBOX",
                1,
                i + 1,
                hashes[-1],
                len(body),
                datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=i),
                frozenset({"\\Seen"}),
                message_id_of(body),
            )
        )
    journal.record_batch(cfg.tenant, user.key, cursor, entries, n)
    return hashes


@pytest.mark.parametrize("connections", [1, 3])
def test_kill_9_during_load_then_rerun_leaves_every_message_once(
    testbed: Any, tmp_path: Path, connections: int
) -> None:
    tag = uuid.uuid4().hex[:8]
    extra = f"  connections_per_user: {connections}\n"
    path, cfg = _config(tmp_path, testbed, tag, dest_extra=extra)
    user = _user("kim")
    n = 1500
    with Journal.open(directory=tmp_path / "state") as journal:
        hashes = _stage_many(cfg, journal, user, n)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)], env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.counts_by_state(cfg.tenant, user.key).get("loaded", 0) >= 200:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the load finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        states = journal.counts_by_state(cfg.tenant, user.key)
        assert states.get("loaded", 0) < n
        rerun = load_user(cfg, journal, user)
        assert rerun.connections == connections
        assert rerun.appended + rerun.already_present + states.get("loaded", 0) == n
        assert journal.counts_by_state(cfg.tenant, user.key) == {"loaded": n}
        assert verify_user(cfg, journal, user).ok
    with _client(testbed, f"kim-{tag}@dest.test") as dst:
        dst.select_folder("INBOX", readonly=True)
        got = dst.fetch(dst.search("ALL"), ["BODY.PEEK[]"])
        assert Counter(hashlib.sha256(d[b"BODY[]"]).hexdigest() for d in got.values()) == Counter(
            hashes
        )


def test_over_quota_fails_the_user(testbed: Any, tmp_path: Path) -> None:
    _, cfg = _config(tmp_path, testbed, "unused")
    user = ScalixUser(display_name="q", mailnode="mail", addresses=(testbed.dest_overquota_login,))
    cfg = cfg.model_copy(
        update={"destination": cfg.destination.model_copy(update={"login_template": "{email}"})}
    )
    with Journal.open(directory=tmp_path / "state") as journal:
        store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
        cursor = journal.open_folder(
            cfg.tenant, user.key, SourceFolder("INBOX", "INBOX", "/", frozenset()), 1
        )
        body = b"Subject: big\r\n\r\n" + b"z" * (200 * 1024) + CRLF
        journal.record_batch(
            cfg.tenant,
            user.key,
            cursor,
            [
                LedgerEntry(
                    "INBOX", 1, 1, store.put(body), len(body), datetime.now(UTC), frozenset(), None
                )
            ],
            1,
        )
        with pytest.raises(UserError) as err:
            load_user(cfg, journal, user)
        assert err.value.code == "SXM-DST-003"


def test_message_refused_by_the_server_is_an_item_error(testbed: Any, tmp_path: Path) -> None:
    _, cfg = _config(tmp_path, testbed, uuid.uuid4().hex[:8])
    user = _user("kim")
    with Journal.open(directory=tmp_path / "state") as journal:
        store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
        cursor = journal.open_folder(
            cfg.tenant, user.key, SourceFolder("INBOX", "INBOX", "/", frozenset()), 1
        )
        good = b"Subject: ok\r\n\r\nok\r\n"
        rows = [
            LedgerEntry(
                "INBOX", 1, 1, store.put(good), len(good), datetime.now(UTC), frozenset(), None
            ),
            # Dovecot refuses a zero-byte message.
            LedgerEntry("INBOX", 1, 2, store.put(b""), 0, datetime.now(UTC), frozenset(), None),
            LedgerEntry(
                "INBOX",
                1,
                3,
                store.put(good + b"2"),
                len(good) + 1,
                datetime.now(UTC),
                frozenset(),
                None,
            ),
        ]
        journal.record_batch(cfg.tenant, user.key, cursor, rows, 3)
        result = load_user(cfg, journal, user)
        assert (result.appended, result.failed) == (2, 1)
        assert [(f.uid, f.code) for f in result.item_errors] == [(2, "SXM-DST-004")]


def test_daily_byte_budget_stops_the_user_and_resumes_later(testbed: Any, tmp_path: Path) -> None:
    import sqlalchemy as sa

    from scalix_migrate.state import messages

    tag = uuid.uuid4().hex[:8]
    user = _user("kim")
    # Each staged message is 2,000-2,010 bytes: a 5,000-byte budget takes two a day.
    _, cfg = _config(tmp_path, testbed, tag, dest_extra="  daily_byte_budget: 5000\n")
    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_many(cfg, journal, user, 5)
        first = load_user(cfg, journal, user)
        assert (first.appended, first.stopped_code) == (2, "SXM-DST-006")
        same_day = load_user(cfg, journal, user)
        assert (same_day.appended, same_day.stopped_code) == (0, "SXM-DST-006")
        # A day later the window has moved on.
        with journal.engine.begin() as conn:
            conn.execute(
                messages.update().values(updated_at=datetime.now(UTC) - timedelta(hours=25))
            )
        next_day = load_user(cfg, journal, user)
        assert (next_day.appended, next_day.stopped_code) == (2, "SXM-DST-006")
        assert journal.counts_by_state(cfg.tenant, user.key) == {"loaded": 4, "staged": 1}
        assert sa is not None
