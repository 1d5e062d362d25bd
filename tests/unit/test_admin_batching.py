"""ScalixAdmin.run_batch at scale: chunks bounded by count and bytes, parallel channels."""

from __future__ import annotations

import shlex
import threading
import time

import pytest

from scalix_migrate.errors import MigrationError, TransientError
from scalix_migrate.scalix.admin import (
    BATCH_MARKER,
    MAX_BATCH_BYTES,
    BatchItem,
    ScalixAdmin,
    _chunks,
    _ConnectionLost,
)
from tests.unit.test_admin_commands_builders import EVIL, make_cfg


class _EchoingAdmin(ScalixAdmin):
    """Answers each exec like a shell would: every ``sxdu -a NAME`` prints NAME and a marker
    (exit 1 for names starting with ``bad``). Execs are slow and may overlap (threads)."""

    def __init__(self) -> None:
        super().__init__(make_cfg())
        self.scripts: list[str] = []
        self.active = 0
        self.most_active = 0
        self._guard = threading.Lock()

    def _exec(self, line: str, *, logged: bool = True) -> tuple[int, str, str]:
        with self._guard:
            self.scripts.append(line)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        with self._lock:
            self.execs += 1
        time.sleep(0.05)
        out = []
        for cmd in line.split(f'; echo "{BATCH_MARKER} $?"'):
            words = shlex.split(cmd.strip("; "))
            if not words:
                continue
            name = words[-1]
            out.append(f"{name}\n{BATCH_MARKER} {1 if name.startswith('bad') else 0}\n")
        with self._guard:
            self.active -= 1
        return 0, "".join(out), "err"


def test_parallel_batches_keep_the_order_and_overlap() -> None:
    admin = _EchoingAdmin()
    names = [f"user{i}" for i in range(40)] + ["bad one", EVIL]
    results = admin.run_batch([BatchItem("sxdu", {"name": n}) for n in names], chunk=5, parallel=4)
    assert [r.stdout for r in results] == [f"{n}\n" for n in names]
    assert [r.exit_status for r in results] == [0] * 40 + [1, 0]
    assert results[40].stderr == "err"
    assert results[41].stderr == ""
    assert len(admin.scripts) == admin.execs == 9
    assert admin.commands_sent == len(names)
    assert 1 < admin.most_active <= 4


def test_serial_batches_by_default() -> None:
    admin = _EchoingAdmin()
    admin.run_batch([BatchItem("sxdu", {"name": f"u{i}"}) for i in range(10)], chunk=3)
    assert admin.most_active == 1
    assert admin.execs == 4


def test_chunks_are_bounded_by_count_and_bytes() -> None:
    lines = [f"cmd {i}" for i in range(10)]
    assert [len(g) for g in _chunks(lines, 4)] == [4, 4, 2]
    long = ["x" * 30_000] * 5
    groups = _chunks(long, 100)
    assert [len(g) for g in groups] == [2, 2, 1]
    assert all(sum(len(s) + 22 for s in g) <= MAX_BATCH_BYTES for g in groups)
    huge = ["y" * (MAX_BATCH_BYTES + 1), "z"]
    assert _chunks(huge, 100) == [[huge[0]], ["z"]]  # a line over the cap still goes alone


def test_a_failing_chunk_fails_the_batch_even_in_parallel() -> None:
    class Broken(_EchoingAdmin):
        def _exec(self, line: str, *, logged: bool = True) -> tuple[int, str, str]:
            status, out, err = super()._exec(line, logged=logged)
            return (status, "", err) if "u7" in line else (status, out, err)

    with pytest.raises(MigrationError, match="SXM-SSH-006"):
        Broken().run_batch(
            [BatchItem("sxdu", {"name": f"u{i}"}) for i in range(12)], chunk=3, parallel=3
        )


class _DroppingAdmin(_EchoingAdmin):
    """Like _EchoingAdmin, but the first ``drops`` execs lose the connection after
    ``keep`` commands' output (and half of the next one's), as a dropped SSH link does."""

    def __init__(self, *, drops: int, keep: int = 3, attempts: int = 3) -> None:
        super().__init__()
        self.cfg = make_cfg(reconnect_attempts=attempts)
        self.ssh = self.cfg.source.ssh
        self.drops = drops
        self.keep = keep

    def _exec(self, line: str, *, logged: bool = True) -> tuple[int, str, str]:
        status, out, err = super()._exec(line, logged=logged)
        if self.drops <= 0:
            return status, out, err
        self.drops -= 1
        ends = [i for i in range(len(out)) if out.startswith(BATCH_MARKER, i)]
        cut = out.index("\n", ends[self.keep - 1]) + 1 if self.keep else 0
        partial = out[: cut + 3] + f"{BATCH_MARKER} 1"  # a torn line: not a finished command
        raise _ConnectionLost("lost", stdout=partial, stderr="")


def test_a_lost_connection_reruns_only_the_unfinished_commands() -> None:
    admin = _DroppingAdmin(drops=2, keep=3)
    names = [f"u{i}" for i in range(10)]
    results = admin.run_batch([BatchItem("sxdu", {"name": n}) for n in names])
    assert [r.stdout for r in results] == [f"{n}\n" for n in names]
    assert [r.exit_status for r in results] == [0] * 10
    assert admin.reconnects == 2
    # 10 commands, then the 7 after the first three, then the 4 after the next three.
    assert [s.count(BATCH_MARKER) for s in admin.scripts] == [10, 7, 4]
    assert "u3" in admin.scripts[1]
    assert "u2" not in admin.scripts[1]


def test_a_connection_lost_every_time_fails_transient_and_bounded() -> None:
    admin = _DroppingAdmin(drops=100, keep=0, attempts=2)
    with pytest.raises(TransientError, match="SXM-SSH-007") as caught:
        admin.run_batch([BatchItem("sxdu", {"name": f"u{i}"}) for i in range(4)])
    assert len(admin.scripts) == 3  # the first try and two reconnects
    assert "0 of 4 finished" in str(caught.value)
    assert "end markers" not in str(caught.value)
