"""The report's memory and time against the number of users (report.html's users tables).

Builds a users frame of ``--users`` rows (the columns of ``users.csv``, plausible values)
and renders ``report.html`` from it, in this process, as the report step does; prints the
traced peak (tracemalloc, Python allocations) and the peak RSS before and after::

    .venv/bin/python bench/report_memory.py --users 1000 5000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def measure(users: int) -> str:
    import pandas as pd

    from scalix_migrate import report

    rows = []
    for i in range(users):
        one: dict[str, object] = dict.fromkeys(report.USER_COLUMNS, 0)
        one.update(
            user=f"user{i}@example.test",
            display_name=f"User {i}",
            status="done",
            folders=5,
            found=i % 50,
            loaded=i % 50,
            bytes=1000 * i,
            duration_s=1.5,
            msg_per_s=float(i % 50),
            error_code="",
            error="",
        )
        rows.append(one)
    frame = pd.DataFrame(rows, columns=report.USER_COLUMNS)
    before = rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    page = report._html("bench", frame, pd.DataFrame(), "# bench\n\nsummary")
    took = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    return (
        f"{users} users: report.html {len(page) / 1e6:.1f} MB in {took:.1f} s; traced peak "
        f"{peak / 1e6:.0f} MB; peak RSS {before} -> {rss_mb()} MB "
        f"(tables of {report.USERS_PER_TABLE} users)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one measurement
    args = parser.parse_args()
    if args.one is not None:
        print(measure(args.one), flush=True)
        return
    for n in args.users:  # each in its own process: a peak RSS is never given back
        subprocess.run([sys.executable, __file__, "--one", str(n)], check=True)


if __name__ == "__main__":
    main()
