"""One Prefect test API server per session, for the flow tests only."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

# Hermetic Prefect: its own home, no telemetry, no server configured from outside.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="sxm-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No retry waits in tests (the retries themselves still happen)."""
    import tasks

    monkeypatch.setattr(
        tasks, "retry_policy", lambda config: (config.options.retries.attempts, [0.0])
    )
