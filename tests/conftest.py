"""Shared pytest fixtures and plugin behaviour.

``testbed`` (session scope) starts the real-server test bed of :mod:`tests.testbed`: Dovecot
playing Scalix's IMAP server, a Dovecot destination and OpenSSH's sshd with the admin-command
emulators. When a server binary is missing the fixture *fails* (never skips) and names
``scripts/install-testbed-deps.sh``. Tests that use it are marked ``testbed`` automatically, so
``-m "not testbed"`` selects the tests that need no servers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalix_migrate.sandbox.dav_server import RadicaleServer
from tests.testbed import ScalixTestbed, TestbedError, running_testbed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "testbed: needs the real-server test bed (Dovecot, OpenSSH)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "testbed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.testbed)


@pytest.fixture(scope="session")
def testbed() -> Iterator[ScalixTestbed]:
    try:
        with running_testbed() as bed:
            yield bed
    except TestbedError as exc:
        pytest.fail(f"the real-server test bed cannot start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadicaleServer]:
    """A real CalDAV/CardDAV server (Radicale from PyPI) on a free 127.0.0.1 port."""
    try:
        with RadicaleServer(tmp_path_factory.mktemp("radicale")) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(f"Radicale cannot start: {exc}", pytrace=False)
