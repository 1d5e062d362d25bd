"""No secret anywhere a whole migration leaves traces, through the real Prefect test API.

One flow run migrates a user from the Dovecot "Scalix" to the Dovecot destination (admin and
destination passwords in use), a second one fails preflight on a wrong destination password.
Then every place is searched for each secret, plain, base64 (at each alignment) and hex:
every log record of every logger at DEBUG, the flow runs' state messages, the artifacts, the
report files, every journal row, the staging and state directories, the Prefect database and
its home directory, and the command lines of every process seen while the runs went on.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flows.migrate_tenant import migrate_tenant
from scalix_migrate.sandbox.directory import DirectoryUser, SeedMessage
from scalix_migrate.steps import journal_for
from tests.testbed.bed import scalix_default_folders

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("prefect_server", "fast_retries")]


def encodings(secret: str) -> list[bytes]:
    """The secret as it could appear: plain, hex, and base64 inside a longer base64 text
    (each of the three alignments, without the edge characters that depend on neighbours)."""
    raw = secret.encode()
    out = [raw, raw.hex().encode()]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)
        start = (pad * 4 + 2) // 3 + 1  # skip characters mixed with the padding bytes
        out.append(enc[start : len(enc) - 3].rstrip(b"="))
    return [e for e in out if len(e) >= 8]


def test_the_search_finds_a_secret_in_any_of_its_forms() -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    for prefix in (b"", b"a", b"ab", b"abc"):
        blob = base64.b64encode(prefix + b"user\0" + secret.encode() + b"\0tail")
        assert any(form in blob for form in encodings(secret)), prefix
    assert any(form in secret.encode().hex().encode() for form in encodings(secret))


class _ProcessWatch:
    """Command lines of every process, sampled while the block runs."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for p in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.seen.add(p.read_bytes())
                except OSError:
                    continue  # the process ended meanwhile


def _files(root: Path) -> Iterator[bytes]:
    for p in root.rglob("*"):
        if p.is_file():
            yield p.read_bytes()


def test_no_secret_in_logs_artifacts_reports_journal_prefect_db_or_process_list(
    testbed: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import prefect.settings
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogWorker

    tag = uuid.uuid4().hex[:6]
    mailnode = f"secret-{tag}"
    testbed.update_directory(lambda d: d.mailnodes.append(mailnode))
    address = f"sec-{tag}@primary.test"
    testbed.add_user(
        DirectoryUser(
            display_name=f"Sec {tag}",
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
                "INBOX", b"Subject: s%d\r\n\r\nbody\r\n" % i, [], datetime(2020, 1, 1, tzinfo=UTC)
            )
            for i in range(3)
        ],
    )
    wrong = "wrong-" + uuid.uuid4().hex
    _, cfg = testbed.make_config(
        tmp_path,
        destination={"type": "imap", "login_template": f"{{local_part}}-{tag}@dest.test"},
        source={"server_names": [mailnode], "test_user": address},
    )
    bad_dir = tmp_path / "bad"
    _, bad = testbed.make_config(
        bad_dir,
        destination={
            "type": "imap",
            "login_template": f"{{local_part}}-{tag}@dest.test",
            "password": wrong,
        },
        source={"server_names": [mailnode], "test_user": address},
    )
    secrets = [testbed.admin_password, testbed.dest_password, wrong]

    caplog.set_level(logging.DEBUG)
    with _ProcessWatch() as procs:
        ok = migrate_tenant(config=cfg, return_state=True)
        refused = migrate_tenant(config=bad, return_state=True)
    assert ok.is_completed(), ok.message
    assert refused.is_failed()
    assert "PF-DST-002" in (refused.message or "")
    APILogWorker.drain_all(timeout=30)  # the run logs are in the API's database now

    haystack: list[bytes] = [
        # The stand-in servers' loggers play the remote side (they see what clients send).
        r.getMessage().encode("utf-8", "replace")
        for r in caplog.records
        if not r.name.startswith("scalix_migrate.sandbox")
    ]
    haystack += [(s.message or "").encode() for s in (ok, refused)]
    with get_client(sync_client=True) as client:
        haystack += [
            json.dumps(a.model_dump(mode="json")).encode() for a in client.read_artifacts()
        ]
        haystack += [
            json.dumps(r.model_dump(mode="json")).encode() for r in client.read_flow_runs()
        ]
        haystack += [json.dumps(lg.model_dump(mode="json")).encode() for lg in client.read_logs()]
    for c in (cfg, bad):
        with journal_for(c) as journal, journal.engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(conn)
            for table in meta.sorted_tables:
                haystack += [repr(tuple(row)).encode() for row in conn.execute(sa.select(table))]
        for d in (c.options.reports_dir, c.options.staging_dir, c.options.state.dir):
            haystack += list(_files(Path(d)))
    db_url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    db_file = Path(str(db_url).split(":///", 1)[1])
    haystack += list(_files(db_file.parent))
    haystack += list(_files(Path(prefect.settings.PREFECT_HOME.value())))
    haystack += sorted(procs.seen)

    assert len(caplog.records) > 200  # the client libraries and Prefect did log at DEBUG
    assert any(b"PF-DST-002" in h for h in haystack)  # the refusal itself is there
    for secret in secrets:
        for form in encodings(secret):
            leaks = [h[:120] for h in haystack if form in h]
            assert not leaks, f"a secret ({len(secret)} chars) in {leaks[:3]}"
