"""Peak memory of one user's extract: one 50 MB message and 20,000 small ones.

The Scalix stand-in (the embedded pymap sandbox) runs in a child process, so its memory does not
count; this process only extracts, and reports its peak RSS (``ru_maxrss``) before and after.
Memory must be bounded by the fetch batch (``fetch_batch_bytes``) plus the one large message,
not by the mailbox: the run fails (exit 1) when the extract's peak exceeds ``--ceiling-mb``.

    .venv/bin/python bench/extract_bench.py [--small 20000] [--big-mb 50] [--ceiling-mb 400]

It also reports the time spent staging (writing the batches' packs, and their fsyncs and
renames, ``staging_s``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from scalix_migrate import extract, staging
from scalix_migrate.config import TenantConfig
from scalix_migrate.extract import extract_user
from scalix_migrate.records import ScalixUser
from scalix_migrate.state import Journal

SERVER = textwrap.dedent(
    """
    import json, sys
    from datetime import datetime, timezone
    from pathlib import Path
    from scalix_migrate.sandbox import Sandbox
    from scalix_migrate.sandbox.directory import DirectoryUser, FolderSpec, SeedMessage

    workdir, small, big_mb = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    when = datetime(2021, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    with Sandbox(workdir, seed=True) as sb:
        mailnode = sb.directory().mailnodes[0]
        sb.add_user(DirectoryUser(
            display_name="Bench User", mailnode=mailnode, auth_id="bench",
            addresses=["bench@example.test"], password="unused",
            folders=[FolderSpec("INBOX"), FolderSpec("Archiv")]))
        line = b"x" * 76 + b"\\r\\n"
        big = b"Subject: big\\r\\n\\r\\n" + line * (big_mb * 1024 * 1024 // len(line))
        sb.seed_messages("bench@example.test", [SeedMessage("Archiv", big, ["\\\\Seen"], when)])
        chunk = []
        for i in range(small):
            head = b"Subject: small %d\\r\\nMessage-ID: <s%d@bench>\\r\\n\\r\\n" % (i, i)
            body = head + line * 20
            chunk.append(SeedMessage("INBOX", body, ["\\\\Seen"] if i % 2 else [], when))
            if len(chunk) == 1000:
                sb.seed_messages("bench@example.test", chunk)
                chunk = []
        if chunk:
            sb.seed_messages("bench@example.test", chunk)
        print(json.dumps(sb.config_data({"type": "mbox", "path": str(workdir / "out")})))
        sys.stdout.flush()
        sys.stdin.read()  # serve until the parent closes our stdin
    """
)


class StagingClock:
    """Wall time spent in StagingBatch.put and sync_batches (patched in for the benchmark)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        put, sync_batches = staging.StagingBatch.put, staging.sync_batches
        clock = self

        def timed_put(batch: staging.StagingBatch, data: bytes) -> str:
            t0 = time.perf_counter()
            try:
                return put(batch, data)
            finally:
                clock.seconds += time.perf_counter() - t0

        def timed_sync(batches: Sequence[staging.StagingBatch]) -> None:
            t0 = time.perf_counter()
            try:
                sync_batches(batches)
            finally:
                clock.seconds += time.perf_counter() - t0

        setattr(staging.StagingBatch, "put", timed_put)  # noqa: B010 (patching a method)
        # the extract's committer calls it by the name it imported
        setattr(extract, "sync_batches", timed_sync)  # noqa: B010


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--ceiling-mb", type=float, default=400.0)
    args = parser.parse_args()
    clock = StagingClock()

    with tempfile.TemporaryDirectory(prefix="sxm-bench-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVER,
                str(work / "sandbox"),
                str(args.small),
                str(args.big_mb),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if server.stdout is None or server.stdin is None:
                raise RuntimeError("pipes to the sandbox process are missing")
            line = server.stdout.readline()
            if not line:
                print("the sandbox did not start", file=sys.stderr)
                return 2
            seeded_s = time.monotonic() - started
            data = json.loads(line)
            data["options"]["staging_dir"] = str(work / "staging")
            cfg = TenantConfig.model_validate(data)
            user = ScalixUser(
                display_name="Bench User",
                mailnode=cfg.source.server_names[0],
                auth_id="bench",
                addresses=("bench@example.test",),
            )
            before = peak_rss_mb()
            t0 = time.monotonic()
            with Journal.open(directory=work / "state") as journal:
                result = extract_user(cfg, journal, user)
            elapsed = time.monotonic() - t0
            after = peak_rss_mb()
        finally:
            if server.stdin is not None:
                server.stdin.close()
            server.wait(timeout=60)

    report = {
        "messages": result.found,
        "staged": result.staged,
        "bytes": result.bytes,
        "seed_s": round(seeded_s, 1),
        "extract_s": round(elapsed, 1),
        "msg_per_s": round(result.found / elapsed, 0) if elapsed else None,
        "durability": "a pack per batch, fsynced and renamed before the journal records it",
        "staging_s": round(clock.seconds, 2),
        "peak_rss_before_mb": round(before, 1),
        "peak_rss_mb": round(after, 1),
        "fetch_batch_bytes_mb": cfg.source.imap.fetch_batch_bytes / 2**20,
        "ceiling_mb": args.ceiling_mb,
    }
    print(json.dumps(report, indent=1))
    expected = args.small + 1
    if result.staged != expected:
        print(f"expected {expected} staged messages, got {result.staged}", file=sys.stderr)
        return 1
    if after > args.ceiling_mb:
        print(
            f"peak RSS {after:.0f} MB is over the ceiling {args.ceiling_mb:.0f} MB", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
