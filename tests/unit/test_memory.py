"""The flow's trims of freed memory: at most one every few seconds, a no-op off glibc."""

from __future__ import annotations

import pytest

from scalix_migrate import memory


def test_trims_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    now = [100.0]
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    monkeypatch.setattr(memory.time, "monotonic", lambda: now[0])
    trimmer = memory.Trimmer(every_s=5.0)
    assert not trimmer.maybe()  # just made: the interval starts now
    now[0] += 5.0
    assert trimmer.maybe()
    now[0] += 1.0
    assert not trimmer.maybe()
    now[0] += 4.0
    assert trimmer.maybe()
    assert calls == [0, 0]


def test_without_malloc_trim_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    trimmer = memory.Trimmer(every_s=0.0)
    assert not trimmer.maybe()


def test_glibc_trim_is_found_and_runs() -> None:
    memory._malloc_trim.cache_clear()
    trim = memory._malloc_trim()
    assert trim is not None  # the project's machines run glibc
    assert trim(0) in (0, 1)
