"""Benchmark: discover N users (default 5,000) over one SSH connection with batched commands.

Runs against the embedded sandbox's SSH server (a real paramiko server over TCP speaking the
admin-command emulators); prints the wall time and the commands per second. Usage::

    .venv/bin/python bench/discovery_bench.py [--users 5000] [--chunk 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from scalix_migrate.config import TenantConfig
from scalix_migrate.discovery import discover_users
from scalix_migrate.sandbox import Sandbox
from scalix_migrate.sandbox.directory import Directory, DirectoryUser


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--chunk", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Sandbox(Path(tmp), seed=False) as sb:
        node = sb.directory().mailnodes[0]

        def populate(d: Directory) -> None:
            for i in range(args.users):
                d.users.append(
                    DirectoryUser(
                        display_name=f"Bench User {i:05d}",
                        mailnode=node,
                        auth_id=f"bench{i}@example.test",
                        addresses=[f"bench{i}@example.test", f"b.{i}@example.test"],
                        password="x",
                        mailbox_kib=i,
                    )
                )

        sb.update_directory(populate)
        data = sb.config_data({"type": "maildir", "path": str(Path(tmp) / "out")})
        cfg = TenantConfig.model_validate(data)
        began = time.monotonic()
        found = discover_users(cfg, chunk=args.chunk)
        took = time.monotonic() - began
        n = len(found.all_users)
        commands = 1 + 3 * (n)
        print(
            f"discovered {n} users ({len(found.unparsed)} unparsed lines, "
            f"{len(found.failures)} failures) in {took:.1f}s: {commands / took:.0f} commands/s"
        )


if __name__ == "__main__":
    main()
