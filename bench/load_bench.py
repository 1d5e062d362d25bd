"""Load throughput into a real Dovecot destination, with and without MULTIAPPEND.

Starts the test bed's destination Dovecot (``tests.testbed.dovecot.destination``) on a free
loopback port, stages N messages (sizes 1-20 KB, mixed flags) for a fresh user per run, and
times ``load_user`` (folder creation, journal updates and APPENDs included). Prints msg/s and
MB/s for each mode, then checks the destination holds every message exactly once.

    .venv/bin/python bench/load_bench.py --messages 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scalix_migrate.config import TenantConfig, parse_config
from scalix_migrate.destinations.base import Destination, message_id_of
from scalix_migrate.destinations.imap import ImapDestination
from scalix_migrate.load import load_user
from scalix_migrate.records import LedgerEntry, ScalixUser, SourceFolder
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import Journal
from tests.testbed.dovecot import destination


def _config(work: Path, port: int, secret: Path, tag: str) -> TenantConfig:
    return parse_config(
        textwrap.dedent(f"""\
        tenant: bench
        source:
          server: scalix.invalid
          server_names: [mail]
          admin_user: sxadmin
          admin_password: "file:{secret}"
          test_user: test@example.com
        destination:
          type: imap
          host: 127.0.0.1
          port: {port}
          tls: none
          preset: dovecot
          login_template: "{{local_part}}-{tag}@dest.test"
          password: "file:{secret}"
        options:
          staging_dir: {work / "staging"}
        """)
    )


def _stage(cfg: TenantConfig, journal: Journal, user: ScalixUser, n: int) -> int:
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
    cursor = journal.open_folder(
        cfg.tenant, user.key, SourceFolder("INBOX", "INBOX", "/", frozenset()), 1
    )
    entries, total = [], 0
    for i in range(n):
        body = (
            f"Message-ID: <b{i}@example.com>\r\nSubject: bench {i}\r\n\r\n".encode()
            + b"lorem ipsum dolor sit amet\r\n" * (40 + (i * 37) % 700)
        )
        total += len(body)
        entries.append(
            LedgerEntry(
                "INBOX",
                1,
                i + 1,
                store.put(body),
                len(body),
                datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=i),
                frozenset({"\\Seen"} if i % 2 else {"\\Flagged"}),
                message_id_of(body),
            )
        )
    journal.record_batch(cfg.tenant, user.key, cursor, entries, n)
    return total


def run(work: Path, port: int, secret: Path, n: int, *, multiappend: bool) -> None:
    tag = uuid.uuid4().hex[:8]
    run_dir = work / tag
    cfg = _config(run_dir, port, secret, tag)
    user = ScalixUser(display_name="bench", mailnode="mail", addresses=("bench@example.com",))

    def open_dest(c: TenantConfig, u: ScalixUser) -> Destination:
        assert c.destination.type == "imap"
        d = ImapDestination(c.destination, c, u)
        real_enter = d.__enter__

        def enter() -> ImapDestination:
            real_enter()
            d.multiappend = d.multiappend and multiappend
            return d

        d.__enter__ = enter  # type: ignore[method-assign]
        return d

    with Journal.open(directory=run_dir / "state") as journal:
        total = _stage(cfg, journal, user, n)
        t0 = time.perf_counter()
        result = load_user(cfg, journal, user, destination=open_dest)
        elapsed = time.perf_counter() - t0
        assert result.appended == n, result
        t1 = time.perf_counter()
        again = load_user(cfg, journal, user, destination=open_dest)
        rerun = time.perf_counter() - t1
        assert again.appended == 0
    print(
        f"multiappend={'on ' if multiappend else 'off'} {n} msgs {total / 1e6:.1f} MB "
        f"in {elapsed:.2f} s: {n / elapsed:.0f} msg/s, {total / 1e6 / elapsed:.1f} MB/s; "
        f"rerun {rerun:.2f} s appends 0"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sxm-bench-"))
    os.chmod(work, 0o755)  # noqa: S103 - Dovecot's unprivileged processes must traverse it
    secret = work / "password"
    secret.write_text("bench-secret")
    server = destination(work / "dovecot", "bench-secret")
    server.start()
    try:
        for mode in (False, True, False, True):
            run(work, server.port, secret, args.messages, multiappend=mode)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
