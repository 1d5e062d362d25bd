"""Fault-suite fixtures: the shared test bed's slices and a fault proxy per server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.scalix_bed import bed
from tests.support.faultproxy import FaultProxy
from tests.testbed import ScalixTestbed

__all__ = ["bed"]


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
