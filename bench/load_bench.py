"""Load throughput into a real Dovecot destination: MULTIAPPEND on/off, 1..N connections.

Starts the test bed's destination Dovecot (``tests.testbed.dovecot.destination``) on a free
loopback port, stages N messages (sizes 1-20 KB, mixed flags) for a fresh user per run, and
times ``load_user`` (folder creation, journal updates and APPENDs included) with each
``destination.connections_per_user`` given. Prints msg/s and MB/s for each mode, the time the
journal writes took (summed over the threads: when it nears the wall time, SQLite is the
bottleneck) and the load average, then checks a rerun appends nothing.

    .venv/bin/python bench/load_bench.py --messages 2000 --connections 1 2 3
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.testbed is imported from the checkout

from scalix_migrate.config import TenantConfig, parse_config  # noqa: E402
from scalix_migrate.destinations.base import Destination  # noqa: E402
from scalix_migrate.destinations.imap import ImapDestination  # noqa: E402
from scalix_migrate.load import load_user  # noqa: E402
from scalix_migrate.message_identity import message_id_of  # noqa: E402
from scalix_migrate.records import LedgerEntry, LoadState, ScalixUser, SourceFolder  # noqa: E402
from scalix_migrate.staging import StagingStore  # noqa: E402
from scalix_migrate.state import Journal  # noqa: E402
from scalix_migrate.user_context import UserContext  # noqa: E402
from tests.testbed.dovecot import destination  # noqa: E402


def _config(work: Path, port: int, secret: Path, tag: str, connections: int) -> TenantConfig:
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
          connections_per_user: {connections}
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


class _JournalClock:
    """Seconds spent in the load's journal writes, summed over all threads."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.lock = threading.Lock()

    def add(self, t0: float) -> None:
        with self.lock:
            self.seconds += time.perf_counter() - t0


CLOCK = _JournalClock()


class TimedJournal(Journal):
    def set_load_state(self, ids: Sequence[int], state: LoadState, **kw: Any) -> None:
        t0 = time.perf_counter()
        try:
            super().set_load_state(ids, state, **kw)
        finally:
            CLOCK.add(t0)

    def mark_loaded(self, dest_folder: str, loaded: Any) -> None:
        t0 = time.perf_counter()
        try:
            super().mark_loaded(dest_folder, loaded)
        finally:
            CLOCK.add(t0)


class _NoMultiappend(ImapDestination):
    """The IMAP destination as if the server did not advertise MULTIAPPEND.

    (A subclass: ``with`` looks ``__enter__`` up on the type, not the instance.)"""

    def __enter__(self) -> ImapDestination:
        super().__enter__()
        self.multiappend = False
        return self


def run(
    work: Path, port: int, secret: Path, n: int, *, multiappend: bool, connections: int
) -> None:
    tag = uuid.uuid4().hex[:8]
    run_dir = work / tag
    cfg = _config(run_dir, port, secret, tag, connections)
    user = ScalixUser(display_name="bench", mailnode="mail", addresses=("bench@example.com",))

    def open_dest(c: TenantConfig, u: ScalixUser) -> Destination:
        assert c.destination.type == "imap"
        cls = ImapDestination if multiappend else _NoMultiappend
        login = UserContext.of(c, u).destination_login
        assert login is not None
        return cls(c.destination, login=login, tokens=None, user=u.key)

    with TimedJournal.open(directory=run_dir / "state") as journal:
        total = _stage(cfg, journal, user, n)
        CLOCK.seconds = 0.0
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        result = load_user(cfg, journal, user, destination=open_dest)
        elapsed = time.perf_counter() - t0
        journal_s = CLOCK.seconds
        load1 = os.getloadavg()[0]
        assert result.appended == n, result
        assert result.connections == connections, result
        t1 = time.perf_counter()
        again = load_user(cfg, journal, user, destination=open_dest)
        rerun = time.perf_counter() - t1
        assert again.appended == 0
    print(
        f"connections={connections} multiappend={'on ' if multiappend else 'off'} {n} msgs "
        f"{total / 1e6:.1f} MB in {elapsed:.2f} s: {n / elapsed:.0f} msg/s, "
        f"{total / 1e6 / elapsed:.1f} MB/s; journal writes {journal_s:.2f} s "
        f"({100 * journal_s / elapsed:.0f}% of wall); load avg {load0:.2f}->{load1:.2f}; "
        f"rerun {rerun:.2f} s appends 0",
        flush=True,
    )


class LatencyProxy:
    """A loopback TCP proxy that delays every chunk by ``one_way_s`` in each direction (a
    WAN's round trip without its bandwidth limit): what several connections are for."""

    def __init__(self, target_port: int, one_way_s: float) -> None:
        self.target_port, self.one_way_s = target_port, one_way_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
            for src, dst in ((client, server), (server, client)):
                q: queue.Queue[tuple[float, bytes]] = queue.Queue()
                threading.Thread(target=self._read, args=(src, q), daemon=True).start()
                threading.Thread(target=self._write, args=(dst, q), daemon=True).start()

    def _read(self, src: socket.socket, q: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.one_way_s, data))
            if not data:
                return

    def _write(self, dst: socket.socket, q: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            due, data = q.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument(
        "--connections",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        metavar="N",
        help="destination.connections_per_user values to measure (default: 1 2 3)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode")
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="round trip added by a loopback proxy in front of Dovecot (default: none)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sxm-bench-"))
    os.chmod(work, 0o755)  # noqa: S103 - Dovecot's unprivileged processes must traverse it
    secret = work / "password"
    secret.write_text("bench-secret")
    server = destination(work / "dovecot", "bench-secret")
    server.start()
    proxy = LatencyProxy(server.port, args.rtt_ms / 2000) if args.rtt_ms > 0 else None
    port = proxy.port if proxy is not None else server.port
    print(f"rtt {args.rtt_ms:g} ms, {os.cpu_count()} cores", flush=True)
    try:
        for _ in range(args.repeat):
            for connections in args.connections:
                for mode in (False, True):
                    run(
                        work,
                        port,
                        secret,
                        args.messages,
                        multiappend=mode,
                        connections=connections,
                    )
    finally:
        if proxy is not None:
            proxy.close()
        server.stop()


if __name__ == "__main__":
    main()
