"""Where a message's time goes in the core: extract, load, verify, and a rerun of each.

Starts the real test bed (Dovecot as Scalix -> Dovecot), seeds ``--users`` users with about
``--messages`` messages each (``bench/peer_corpus.py``), then runs ``extract_user`` ->
``load_user`` -> ``verify_user`` per user in this process, one user at a time, and the same
again (the rerun). Prints seconds per step; with ``--pyinstrument FILE`` the first pass runs
under pyinstrument and its text profile is written to ``FILE`` (``--rerun-profile FILE``
likewise for the rerun, ``--delta-profile FILE`` for a third pass after 1 % new messages and
``\\Flagged`` on ~2 % of each INBOX at the source, as ``compare_peers.py``'s delta;
``--memray FILE`` records the first pass's heap with memray, for ``memray stats``)::

    .venv/bin/python bench/profile_core.py --users 2 --messages 1000 --pyinstrument /tmp/p.txt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from compare_peers import change_source, seed  # noqa: E402

from scalix_migrate.records import ScalixUser  # noqa: E402


def one_pass(cfg: Any, users: list[ScalixUser], serial: bool) -> dict[str, float]:
    from scalix_migrate.extract import extract_user
    from scalix_migrate.load import load_user
    from scalix_migrate.steps import journal_for
    from scalix_migrate.transfer import transfer_user
    from scalix_migrate.verify import verify_user

    spent = {"extract": 0.0, "load": 0.0, "verify": 0.0}
    for user in users:
        with journal_for(cfg) as journal:
            t0 = time.perf_counter()
            if serial:
                extract_user(cfg, journal, user)
                t1 = time.perf_counter()
                load_user(cfg, journal, user)
            else:  # "extract" is the pipelined transfer's time, "load" 0
                transfer_user(cfg, journal, user)
                t1 = time.perf_counter()
            t2 = time.perf_counter()
            result = verify_user(cfg, journal, user)
            t3 = time.perf_counter()
            if not result.ok:
                raise SystemExit(f"verify found {len(result.differences)} difference(s)")
        spent["extract"] += t1 - t0
        spent["load"] += t2 - t1
        spent["verify"] += t3 - t2
    return spent


def profiled(
    cfg: Any, users: list[ScalixUser], out: Path | None, serial: bool, memray: Path | None = None
) -> dict[str, float]:
    if memray is not None:  # the heap of this pass alone (seeding is done and freed)
        import memray as memray_lib

        memray.unlink(missing_ok=True)
        with memray_lib.Tracker(str(memray)):
            return one_pass(cfg, users, serial)
    if out is None:
        return one_pass(cfg, users, serial)
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        return one_pass(cfg, users, serial)
    finally:
        profiler.stop()
        out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pyinstrument", type=Path, default=None)
    parser.add_argument("--rerun-profile", type=Path, default=None)
    parser.add_argument("--delta-profile", type=Path, default=None)
    parser.add_argument(
        "--memray", type=Path, default=None, help="record the first pass's heap (memray)"
    )
    parser.add_argument("--serial", action="store_true", help="load after extract, not with it")
    args = parser.parse_args()
    if not (1 <= args.users <= 50 and 1 <= args.messages <= 20000):
        parser.error("--users 1..50, --messages 1..20000")

    from tests.testbed.bed import running_testbed

    with running_testbed() as bed:
        users = seed(bed, args.users, args.messages, args.seed)
        work = Path(tempfile.mkdtemp(prefix="sxm-profile-"))
        _, cfg = bed.make_config(
            work,
            destination={
                "type": "imap",
                "preset": "dovecot",
                "login_template": "{local_part}-prof@dest.test",
            },
        )
        c0, t0 = time.process_time(), time.perf_counter()
        first = profiled(cfg, users, args.pyinstrument, args.serial, args.memray)
        c1, t1 = time.process_time(), time.perf_counter()
        rerun = profiled(cfg, users, args.rerun_profile, args.serial)
        c2, t2 = time.process_time(), time.perf_counter()
        added, flagged = change_source(bed, users, args.seed)
        c3, t3 = time.process_time(), time.perf_counter()
        delta = profiled(cfg, users, args.delta_profile, args.serial)
        c4, t4 = time.process_time(), time.perf_counter()
    print(f"delta: {added} new messages, {flagged} flagged at the source")
    for name, spent, wall, cpu in (
        ("first", first, t1 - t0, c1 - c0),
        ("rerun", rerun, t2 - t1, c2 - c1),
        ("delta", delta, t4 - t3, c4 - c3),
    ):
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in spent.items())
        print(f"{name}: {wall:.2f} s wall, {cpu:.2f} s CPU of this process ({steps})")


if __name__ == "__main__":
    main()
