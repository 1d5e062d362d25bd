"""Fault-suite fixtures: the shared test bed's slices and a fault proxy per server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.scalix_bed import bed
from tests.support.faultproxy import FaultProxy
from tests.testbed import ScalixTestbed

__all__ = ["bed"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def ssh_proxy(testbed: ScalixTestbed) -> Iterator[FaultProxy]:
    with FaultProxy(testbed.ssh_port) as proxy:
        yield proxy


@pytest.fixture
def source_proxy(testbed: ScalixTestbed) -> Iterator[FaultProxy]:
    with FaultProxy(testbed.imap_port) as proxy:
        yield proxy


@pytest.fixture
def dest_proxy(testbed: ScalixTestbed) -> Iterator[FaultProxy]:
    with FaultProxy(testbed.dest_imap_port) as proxy:
        yield proxy
