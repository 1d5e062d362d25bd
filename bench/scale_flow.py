"""Many users through the real flow on a real ``prefect server``: is the time mail or
orchestration?

Starts the test bed (fast admin-command emulators) and a ``prefect server`` (its own home;
SQLite, or with ``--prefect-db postgres`` a private PostgreSQL), adds ``--users`` users (most
with ``--few`` messages, every ``--heavy-every``-th with ``--heavy`` messages), runs
``scalix-migrate run`` once as an operator would, and reports: wall time and the CLI's peak
RSS, the flow run's state and message, the task runs the API recorded (two per user, plus
the tenant's own), how long the task runs took in all and by kind, the time per user in
which no task run ran, the slowest answer of the API while the run went on (a reader asks
for the flow run every second), and the messages at the destination
against the source (from the journal: every message loaded and verified)::

    .venv/bin/python bench/scale_flow.py --users 300
    .venv/bin/python bench/scale_flow.py --users 5000 --connects-per-second 10 --rerun

``--rerun`` runs the finished tenant once more and reports the same figures for it.

The test bed's source Dovecot checks every mboxadmin login with a Python checkpassword
process (~0.1 s of CPU each, three logins per user): that cost is the stand-in's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from compare_peers import spawn, start_prefect_server, task_run_breakdown  # noqa: E402
from peer_corpus import make_corpus  # noqa: E402


def add_users(bed: Any, n: int, few: int, heavy: int, heavy_every: int) -> tuple[list[str], int]:
    from scalix_migrate.sandbox.directory import DirectoryUser

    tag = uuid.uuid4().hex[:6]
    node = bed.directory().mailnodes[0]
    addresses: list[str] = []
    users = []
    for i in range(n):
        address = f"sc{i}-{tag}@example.test"
        users.append(
            DirectoryUser(
                display_name=f"Scale {i} {tag}",
                mailnode=node,
                auth_id=f"sc{i}-{tag}",
                addresses=[address],
                password=uuid.uuid4().hex,
                folders=[],
            )
        )
        addresses.append(address)
    bed.update_directory(lambda d: d.users.extend(users))

    def seed_one(i: int) -> int:
        count = heavy if heavy_every and i % heavy_every == 0 else few
        if not count:
            return 0
        msgs = [m for m in make_corpus(i, f"sc{i}", count) if m.folder == "INBOX"][:count]
        bed.seed_messages(addresses[i], msgs)
        return len(msgs)

    # Four logins at once: seeding thousands of users one after another took longer than
    # the run it prepares.
    with ThreadPoolExecutor(max_workers=4) as pool:
        seeded = sum(pool.map(seed_one, range(n)))
    return addresses, seeded


class ApiWatch:
    """Reads the newest flow run once a second; keeps the slowest answer."""

    def __init__(self, api: str) -> None:
        self.api, self.slowest, self.reads = api, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ApiWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        import httpx

        while not self._stop.wait(1.0):
            t0 = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{self.api}/flow_runs/filter", json={"limit": 1}, timeout=60)
            self.slowest = max(self.slowest, time.perf_counter() - t0)
            self.reads += 1


class RssWatch:
    """Samples the resident memory of the CLI's Python process (the one whose command line
    names ``config``) once a second: is the flow's memory flat over the run?"""

    def __init__(self, config: Path) -> None:
        self.needle = str(config).encode()
        self.samples: list[int] = []  # MB, one a second while the CLI runs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _rss_mb(self) -> int | None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if b"run" in argv and self.needle in argv and b"python" in argv[0]:
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            return int(line.split()[1]) // 1024
        return None

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            rss = self._rss_mb()
            if rss is not None:
                self.samples.append(rss)

    def profile(self) -> str:
        """RSS at a tenth, a quarter, half, three quarters and the end of the run."""
        n = len(self.samples)
        if not n:
            return "no samples"
        at = [(f"{q:.0%}", self.samples[min(n - 1, int(q * n))]) for q in (0.1, 0.25, 0.5, 0.75)]
        return ", ".join(f"{k} {v} MB" for k, v in [*at, ("end", self.samples[-1])])


def api_summary(api: str, n_users: int) -> dict[str, Any]:
    from datetime import datetime

    import httpx

    run = httpx.post(
        f"{api}/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 1}, timeout=60
    ).json()[0]
    tasks: list[dict[str, Any]] = []
    while True:
        page = httpx.post(
            f"{api}/task_runs/filter",
            json={
                "flow_runs": {"id": {"any_": [run["id"]]}},
                "limit": 200,
                "offset": len(tasks),
            },
            timeout=60,
        ).json()
        tasks += page
        if len(page) < 200:
            break

    def ts(v: str | None) -> float:
        return datetime.fromisoformat(v).timestamp() if v else 0.0

    flow_start, flow_end = ts(run["start_time"]), ts(run["end_time"])
    in_tasks = sum(ts(t["end_time"]) - ts(t["start_time"]) for t in tasks if t.get("end_time"))
    completed = sum(t["state_type"] == "COMPLETED" for t in tasks)
    per_kind, outside = task_run_breakdown(tasks, flow_start, flow_end)
    return {
        "state": run["state_type"],
        "message": (run.get("state") or {}).get("message"),
        "task_runs": len(tasks),
        "task_runs_completed": completed,
        "flow_run_s": round(flow_end - flow_start, 1),
        "task_run_s_summed": round(in_tasks, 1),
        "task_run_s_by_kind": per_kind,
        "no_task_running_per_user_ms": round(1000 * outside / n_users),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--few", type=int, default=3)
    parser.add_argument("--heavy", type=int, default=300)
    parser.add_argument("--heavy-every", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument(
        "--connects-per-second", type=float, default=5.0, help="options.concurrency (max 10)"
    )
    parser.add_argument(
        "--prefect-db", choices=["sqlite", "postgres"], default="sqlite",
        help="the prefect server's database (postgres: a private PostgreSQL, fsync off)",
    )  # fmt: skip
    parser.add_argument("--rerun", action="store_true", help="run the finished tenant again")
    parser.add_argument(
        "--memray", type=Path, metavar="DIR",
        help="run the CLI under memray (its captures <DIR>/first-run.bin, rerun.bin)",
    )  # fmt: skip
    args = parser.parse_args()
    if not (1 <= args.users <= 5000 and 0 <= args.few <= 50 and 0 <= args.heavy <= 20000):
        parser.error("--users 1..5000, --few 0..50, --heavy 0..20000")

    with contextlib.ExitStack() as stack:
        database_url = None
        if args.prefect_db == "postgres":
            from tests.support.postgres import running_postgres

            pg = stack.enter_context(running_postgres())
            database_url = pg.create_database("prefect").replace("+psycopg", "+asyncpg")
        run_tenant(args, database_url)


def _under_memray(directory: Path | None, label: str, argv: list[str]) -> list[str]:
    """``argv``, or ``argv`` run by memray into ``<directory>/<label>.bin`` (a fresh file)."""
    if directory is None:
        return argv
    directory.mkdir(parents=True, exist_ok=True)
    capture = directory / f"{label.replace(' ', '-')}.bin"
    capture.unlink(missing_ok=True)
    return [sys.executable, "-m", "memray", "run", "-q", "-o", str(capture), *argv]


def run_tenant(args: argparse.Namespace, database_url: str | None) -> None:
    from scalix_migrate.config import load_config
    from scalix_migrate.records import LoadState
    from scalix_migrate.state import Journal, UserStatus
    from tests.testbed.bed import running_testbed

    work = Path(tempfile.mkdtemp(prefix="sxm-scale-"))
    server, api = start_prefect_server(
        work / "prefect-home", work / "prefect-server.log", database_url=database_url
    )
    print(f"prefect server on {args.prefect_db}", flush=True)
    try:
        with running_testbed(fast_emulators=True) as bed:
            t0 = time.perf_counter()
            addresses, seeded = add_users(bed, args.users, args.few, args.heavy, args.heavy_every)
            print(f"{len(addresses)} users, {seeded} messages seeded in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
            path, _ = bed.make_config(
                work,
                destination={
                    "type": "imap",
                    "preset": "dovecot",
                    "login_template": "{local_part}-scale@dest.test",
                },
                options={
                    "concurrency": {
                        "users": args.parallel,
                        "connects_per_second": args.connects_per_second,
                    },
                    "users": {"include": addresses},
                },
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env.update(
                PREFECT_API_URL=api,
                PREFECT_HOME=str(work / "prefect-home"),
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
            )
            cli = str(Path(sys.executable).with_name("scalix-migrate"))
            for label in ["first run", *(["rerun"] if args.rerun else [])]:
                with ApiWatch(api) as watch, RssWatch(path) as rss_watch:
                    t0 = time.perf_counter()
                    code, rss = spawn(_under_memray(args.memray, label, [cli, "run", str(path)]),
                                      work / "run.log", env)  # fmt: skip
                    wall = time.perf_counter() - t0
                summary = api_summary(api, args.users)
                cfg = load_config(path)
                with Journal.open(url=cfg.options.state.url, directory=cfg.options.state.dir) as j:
                    counts = j.counts_by_state(cfg.tenant)
                    done = j.users_with_status(cfg.tenant, UserStatus.done)
                per_user_ms = 1000 * summary["flow_run_s"] / args.users
                print(
                    f"{label}: exit {code}; wall {wall:.1f} s; CLI peak RSS {rss:.0f} MB; "
                    f"{summary}; users done {len(done)} of {args.users}; ledger {counts} "
                    f"(loaded {counts.get(LoadState.loaded.value, 0)} of {seeded} seeded); "
                    f"flow run per user {per_user_ms:.0f} ms; slowest API answer during the "
                    f"run {watch.slowest:.2f} s over {watch.reads} reads; CLI RSS over the run "
                    f"{rss_watch.profile()}; load average "
                    f"{os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
