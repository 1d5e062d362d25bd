"""Where a flow run's time goes: the real flow, in this process, on a running Prefect server.

Starts the test bed and a ``prefect server`` (SQLite, its own home), seeds ``--users`` users,
then runs ``migrate_tenant`` twice (the full run and the rerun) in this process, each under
pyinstrument when ``--profile DIR`` is given (``DIR/first.txt``, ``DIR/rerun.txt``), and
prints each run's wall time (``--memray FILE``: the first run's heap, for ``memray stats``)::

    .venv/bin/python bench/profile_flow.py --users 3 --messages 200 --profile /tmp/flowprof
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from compare_peers import seed, start_prefect_server  # noqa: E402


def timed_run(cfg: Any, out: Path | None, memray: Path | None = None) -> float:
    if memray is not None:  # the heap of the whole run, Prefect's imports included
        import memray as memray_lib

        memray.unlink(missing_ok=True)
        with memray_lib.Tracker(str(memray)):
            return timed_run(cfg, out)
    from scalix_migrate.flowrun import run_flow

    profiler = None
    if out is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
    t0 = time.perf_counter()
    state = run_flow(cfg)
    wall = time.perf_counter() - t0
    if profiler is not None and out is not None:
        profiler.stop()
        out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    print(f"{state.name}: {state.message}; {wall:.2f} s", flush=True)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--memray", type=Path, default=None, help="record the first run's heap")
    args = parser.parse_args()
    if not (1 <= args.users <= 50 and 1 <= args.messages <= 20000):
        parser.error("--users 1..50, --messages 1..20000")

    from tests.testbed.bed import running_testbed

    work = Path(tempfile.mkdtemp(prefix="sxm-flowprof-"))
    server, api = start_prefect_server(work / "prefect-home", work / "prefect-server.log")
    try:
        os.environ.update(
            PREFECT_API_URL=api,
            PREFECT_HOME=str(work / "prefect-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        with running_testbed(fast_emulators=True) as bed:
            users = seed(bed, args.users, args.messages, 1)
            _, cfg = bed.make_config(
                work,
                destination={
                    "type": "imap",
                    "preset": "dovecot",
                    "login_template": "{local_part}-flow@dest.test",
                },
                options={"users": {"include": [u.addresses[0] for u in users]}},
            )
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
            first = timed_run(
                cfg, args.profile / "first.txt" if args.profile else None, args.memray
            )
            rerun = timed_run(cfg, args.profile / "rerun.txt" if args.profile else None)
            print(f"first {first:.2f} s, rerun {rerun:.2f} s ({100 * rerun / first:.0f} %)")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
