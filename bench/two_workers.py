"""Beyond one machine, measured: one Prefect process worker against two, one tenant, the
journal on PostgreSQL.

Starts the test bed, a private PostgreSQL (the journal of each tenant, and with
``--prefect-db postgres`` the Prefect server's database) and a ``prefect server``, seeds
``--users`` users of about ``--messages`` messages each, and migrates the same users twice,
each time as its own tenant to its own destination logins:

* **one worker**: the tenant deployed with ``concurrency_limit: 1``, one ``prefect worker``,
  one flow run of every user;
* **two workers**: the tenant deployed with ``concurrency_limit: 2`` (see README, "Beyond
  one machine"), two workers (each its own ``PREFECT_HOME``, as on its own host, ``--limit
  1``), the users split into two waves (alternately by size), one flow run per wave.

Every run moves ``--users-at-once`` users at once (``options.concurrency.users``). Reported
for each: wall time from creating the flow runs to the last one final, each flow run's own
time, and the journal's loaded messages against the seeded ones::

    .venv/bin/python bench/two_workers.py --users 8 --messages 1000

On one 2-core machine both workers share the same cores and the same two Dovecots: the
figure says what the second worker costs or gains there, not what a second host would add.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from compare_peers import start_prefect_server  # noqa: E402
from scale_flow import add_users  # noqa: E402

WORKER_READY_S = 120
RUNS_DONE_S = 3600


class Workers:
    """``prefect worker start`` processes on one pool; all stopped at the end."""

    def __init__(self, pool: str, directory: Path, api: str) -> None:
        self.pool, self.directory, self.api = pool, directory, api
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> None:
        home = self.directory / f"home-{name}"
        home.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=self.api,
            PREFECT_HOME=str(home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PYTHONPATH=str(REPO),  # flows/ imports the top-level ``tasks`` package
        )
        prefect = str(Path(sys.executable).with_name("prefect"))
        argv = [prefect, "worker", "start", "--pool", self.pool, "--name", name,
                "--limit", "1", "--type", "process"]  # fmt: skip
        with (self.directory / f"{name}.log").open("wb") as log:
            self.procs.append(
                subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the worker and its flow-run processes
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def waves(addresses: list[str], sizes: dict[str, int], n: int) -> list[list[str]]:
    """``n`` waves of about equal mail: the users by size, dealt out in turn."""
    out: list[list[str]] = [[] for _ in range(n)]
    for i, a in enumerate(sorted(addresses, key=lambda a: -sizes[a])):
        out[i % n].append(a)
    return out


def run_on_workers(
    label: str, n_workers: int, cfg_path: Path, work: Path, api: str,
    addresses: list[str], sizes: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    from datetime import datetime

    import httpx

    from scalix_migrate import deploy as deployer
    from scalix_migrate.config import load_config
    from scalix_migrate.state import Journal

    os.environ["PREFECT_API_URL"] = api  # for the deploy and the client in this process
    cfg = load_config(cfg_path)
    deployer.deploy(cfg)
    deployment = httpx.get(f"{api}/deployments/name/migrate-tenant/{cfg.tenant}", timeout=60).json()
    pool = cfg.deployment.work_pool
    workers = Workers(pool, work / f"workers-{label}", api)
    (work / f"workers-{label}").mkdir()
    try:
        for i in range(n_workers):
            workers.start(f"{label}-{i}")
        deadline = time.monotonic() + WORKER_READY_S
        while time.monotonic() < deadline:
            online = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=60)
            if len(online.json()) >= n_workers:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{n_workers} workers not online after {WORKER_READY_S} s")
        t0 = time.perf_counter()
        ids = [
            httpx.post(
                f"{api}/deployments/{deployment['id']}/create_flow_run",
                json={"parameters": {"users": wave}},
                timeout=60,
            ).json()["id"]
            for wave in waves(addresses, sizes, n_workers)
        ]
        deadline = time.monotonic() + RUNS_DONE_S
        while True:
            runs = [httpx.get(f"{api}/flow_runs/{i}", timeout=60).json() for i in ids]
            if all((r.get("state") or {}).get("type") in FINAL for r in runs):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"flow runs not final after {RUNS_DONE_S} s")
            time.sleep(1.0)
        wall = time.perf_counter() - t0
    finally:
        workers.stop()

    def ts(v: str | None) -> float:
        return datetime.fromisoformat(v).timestamp() if v else 0.0

    with Journal.open(url=cfg.options.state.url) as journal:
        counts = journal.counts_by_state(cfg.tenant)
    return {
        "workers": n_workers,
        "wall_s": round(wall, 1),
        "flow_runs": [
            {
                "state": r["state"]["type"],
                "users": len(r["parameters"]["users"]),
                "run_s": round(ts(r["end_time"]) - ts(r["start_time"]), 1),
                "message": r["state"].get("message"),
            }
            for r in runs
        ],
        "ledger": counts,
    }


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--messages", type=int, default=1000, help="per user, about")
    parser.add_argument("--users-at-once", type=int, default=2)
    parser.add_argument(
        "--prefect-db", choices=["sqlite", "postgres"], default="sqlite",
        help="the prefect server's database",
    )  # fmt: skip
    args = parser.parse_args()
    if not (2 <= args.users <= 200 and 1 <= args.messages <= 20000):
        parser.error("--users 2..200, --messages 1..20000")

    from tests.support.postgres import running_postgres
    from tests.testbed.bed import running_testbed

    work = Path(tempfile.mkdtemp(prefix="sxm-workers-"))
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(running_postgres())
        database_url = None
        if args.prefect_db == "postgres":
            database_url = pg.create_database("prefect").replace("+psycopg", "+asyncpg")
        server, api = start_prefect_server(
            work / "prefect-home", work / "prefect-server.log", database_url=database_url
        )
        stack.callback(os.killpg, server.pid, signal.SIGTERM)
        bed = stack.enter_context(running_testbed(fast_emulators=True))
        t0 = time.perf_counter()
        # every user the same size: the waves then carry the same mail
        addresses, seeded = add_users(bed, args.users, args.messages, args.messages, 1)
        sizes = dict.fromkeys(addresses, args.messages)
        print(f"{len(addresses)} users, {seeded} messages seeded in "
              f"{time.perf_counter() - t0:.0f} s; prefect server on {args.prefect_db}",
              flush=True)  # fmt: skip
        results = []
        for n_workers in (1, 2):
            label = f"w{n_workers}"
            tag = uuid.uuid4().hex[:6]
            journal_url = pg.create_database(f"journal_{label}_{tag}")
            path, _ = bed.make_config(
                work / label,
                tenant=f"{label}-{tag}",
                destination={
                    "type": "imap",
                    "preset": "dovecot",
                    "login_template": f"{{local_part}}-{label}{tag}@dest.test",
                },
                options={
                    "state": {"url": journal_url},
                    "staging_dir": str(work / label / "staging"),  # shared by the workers
                    "concurrency": {"users": args.users_at_once, "connects_per_second": 10},
                    "users": {"include": addresses},
                },
                deployment={"work_pool": f"pool-{label}-{tag}", "concurrency_limit": n_workers},
            )
            subprocess.run(
                [str(Path(sys.executable).with_name("prefect")), "work-pool", "create",
                 f"pool-{label}-{tag}", "--type", "process"],
                env={**os.environ, "PREFECT_API_URL": api}, check=True, capture_output=True,
            )  # fmt: skip
            result = run_on_workers(label, n_workers, path, work, api, addresses, sizes)
            loaded = result["ledger"].get("loaded", 0)
            print(f"{n_workers} worker(s): {result}; loaded {loaded} of {seeded}; "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
            results.append(result)
        one, two = results
        print(f"two workers against one: {one['wall_s'] / two['wall_s']:.2f}x "
              f"({two['wall_s']} s against {one['wall_s']} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
