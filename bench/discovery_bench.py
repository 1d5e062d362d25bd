"""Benchmark: discover N users (default 5,000) over one SSH connection with batched commands.

Two targets:

``--target testbed`` (default)
    the real-server test bed (OpenSSH sshd, ForceCommand, admin-command wrapper scripts),
    started with ``fast_emulators=True``: a batch line runs in one emulator process instead of
    one Python process per command (``tests/testbed/emulator_entry.py`` says why; ``--slow``
    keeps the real ``/bin/sh`` and one process per command, as the tests use it).
``--target sandbox``
    the embedded sandbox (in-process paramiko SSH server, the same emulators).

N users are spread over the configured mailnodes (every 50th without a message store) and
``--other`` more sit on a mailnode that is not configured, which discovery must leave out.
The run asserts the count, the number of commands sent, and a few users' fields, then prints
users discovered, wall seconds, commands sent, SSH execs and users/s. Usage (from the repo
root)::

    .venv/bin/python bench/discovery_bench.py [--target testbed|sandbox] [--users 5000]
        [--other 100] [--chunk N] [--parallel N] [--slow]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.testbed is imported from the checkout

from scalix_migrate.config import TenantConfig  # noqa: E402
from scalix_migrate.discovery import DEFAULT_PARALLEL, discover_users  # noqa: E402
from scalix_migrate.records import ScalixUser  # noqa: E402
from scalix_migrate.sandbox.directory import Directory, DirectoryUser  # noqa: E402
from scalix_migrate.scalix.admin import DEFAULT_CHUNK, ScalixAdmin  # noqa: E402

OTHER_MAILNODE = "archive-node"
NO_STORE_EVERY = 50
# With the real shell each emulated command is a Python process (~0.12 s here): 500 of them in
# one exec would pass the test bed's 60 s source.ssh.command_timeout_s.
SLOW_CHUNK = 200


@dataclass
class Target:
    cfg: TenantConfig
    update_directory: Callable[[Callable[[Directory], None]], None]
    directory: Callable[[], Directory]
    startup_s: float


def bench_user(i: int, node: str, *, other: bool = False) -> DirectoryUser:
    tag = f"o{i:05d}" if other else f"{i:05d}"
    return DirectoryUser(
        display_name=f"Bench User {tag}",
        mailnode=node,
        auth_id=f"bench{tag}",
        addresses=[f"bench.{tag}@example.test", f"b{tag}@alias.example.test"],
        password="x",
        user_class="Limited" if i % 7 == 0 else "Full",
        locked=i % 11 == 0,
        has_message_store=i % NO_STORE_EVERY != 0,
        mailbox_kib=i * 3,
        store_limit_kib=(i % 5) * 100_000,
    )


@contextlib.contextmanager
def testbed_target(tmp: Path, *, fast: bool) -> Iterator[Target]:
    from tests.testbed import running_testbed

    with running_testbed(fast_emulators=fast) as bed:
        _, cfg = bed.make_config(tmp, destination={"type": "maildir", "path": str(tmp / "out")})
        yield Target(cfg, bed.update_directory, bed.directory, bed.startup_s)


@contextlib.contextmanager
def sandbox_target(tmp: Path) -> Iterator[Target]:
    from scalix_migrate.sandbox import Sandbox

    began = time.monotonic()
    with Sandbox(tmp / "sandbox", seed=False) as sb:
        data: dict[str, Any] = sb.config_data({"type": "maildir", "path": str(tmp / "out")})
        cfg = TenantConfig.model_validate(data)
        yield Target(cfg, sb.update_directory, sb.directory, time.monotonic() - began)


def populate(target: Target, users: int, other: int) -> tuple[list[str], int]:
    """Add the bench users; return the configured mailnodes and the expected user count."""
    nodes = list(target.cfg.source.server_names)

    def add(d: Directory) -> None:
        d.mailnodes.append(OTHER_MAILNODE)
        d.users.extend(bench_user(i, nodes[i % len(nodes)]) for i in range(users))
        d.users.extend(bench_user(i, OTHER_MAILNODE, other=True) for i in range(other))

    target.update_directory(add)
    wanted = {n.lower() for n in nodes}
    expected = sum(1 for u in target.directory().users if u.mailnode.lower() in wanted)
    return nodes, expected


def check(found: list[ScalixUser], users: int, nodes: list[str], expected: int) -> None:
    """Correctness, not only speed: the count, the filter, and a few users' every field."""
    assert len(found) == expected, (len(found), expected)
    assert not any(u.mailnode == OTHER_MAILNODE for u in found), "other mailnode not filtered"
    by_name = {u.display_name: u for u in found}
    for i in sorted({0, 1, 7, 11, users // 2, users - 1} & set(range(users))):
        want = bench_user(i, nodes[i % len(nodes)])
        got = by_name[want.display_name]
        assert got.mailnode == want.mailnode, got
        assert got.auth_id == want.auth_id, got
        assert got.addresses == tuple(want.addresses), got
        assert got.primary_address == want.addresses[0], got
        assert got.user_class == want.user_class, got
        assert got.locked is want.locked, got
        assert got.has_message_store is want.has_message_store, got
        if want.has_message_store:
            assert got.mailbox_kib == want.mailbox_kib, got
            assert got.store_limit_kib == want.store_limit_kib, got
        else:
            assert got.mailbox_kib == 0, got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=("testbed", "sandbox"), default="testbed")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--other", type=int, default=100, help="users on an unconfigured mailnode")
    ap.add_argument(
        "--chunk",
        type=int,
        default=None,
        help=f"commands per SSH exec (default {DEFAULT_CHUNK}; {SLOW_CHUNK} with --slow)",
    )
    ap.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, help="channels at once")
    ap.add_argument("--slow", action="store_true", help="testbed: real /bin/sh, no fast path")
    args = ap.parse_args()
    if args.chunk is None:
        args.chunk = SLOW_CHUNK if args.slow else DEFAULT_CHUNK
    with tempfile.TemporaryDirectory(prefix="sxm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ctx = (
            testbed_target(tmp, fast=not args.slow)
            if args.target == "testbed"
            else sandbox_target(tmp)
        )
        with ctx as target:
            nodes, expected = populate(target, args.users, args.other)
            began = time.monotonic()
            with ScalixAdmin(target.cfg) as admin:
                found = discover_users(
                    target.cfg, admin=admin, chunk=args.chunk, parallel=args.parallel
                )
            took = time.monotonic() - began
            users = found.all_users
            with_store = sum(1 for u in users if u.has_message_store is not False)
            assert admin.commands_sent == 1 + len(users) + 2 * with_store, admin.commands_sent
            assert not found.unparsed, found.unparsed[:5]
            assert not found.failures, found.failures[:5]
            check(users, args.users, nodes, expected)
    mode = args.target + ("" if args.target == "sandbox" else " (slow)" if args.slow else " (fast)")
    print(
        f"{mode}: {len(users)} users discovered (+{args.other} on {OTHER_MAILNODE} left out) "
        f"in {took:.2f} s wall; {admin.commands_sent} commands sent in {admin.execs} SSH execs "
        f"(chunk {args.chunk}, {args.parallel} in parallel); {len(users) / took:.0f} users/s; "
        f"stand-in start-up {target.startup_s:.1f} s (not counted)"
    )


if __name__ == "__main__":
    main()
