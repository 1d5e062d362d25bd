"""Per-source-server caps on IMAP connections: how many at once, and how many new per second.

Scalix throttles accepts (``IMAP_CONNRATE_LIMIT=10``/s) and caps connections
(``IMAP_CONNECTION_LIMIT=500``, scalix.md §0), and it shares them with the users still working.
Every extractor thread in the process therefore goes through one :class:`HostLimiter` per
source host: a semaphore bounds concurrent connections, a token bucket (burst 1) spaces
connects. The registry is process-wide on purpose: users run in threads of one worker and must
share the server's budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from scalix_migrate.errors import TransientError


class HostLimiter:
    """Thread-safe connection cap and connect-rate limit for one server."""

    def __init__(
        self,
        host: str,
        *,
        connections: int,
        connects_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if connections < 1 or connects_per_second <= 0:
            raise ValueError("connections must be >= 1 and connects_per_second > 0")
        self.host = host
        self.connections = connections
        self.connects_per_second = connects_per_second
        self._slots = threading.BoundedSemaphore(connections)
        self._lock = threading.Lock()
        self._next_connect = 0.0
        self._clock = clock
        self._sleep = sleep
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Connections currently held (for tests and progress displays)."""
        with self._lock:
            return self._in_use

    def _wait_for_token(self) -> None:
        # Reserve the next connect slot under the lock, sleep outside it: callers queue up in
        # 1/rate steps without holding the lock while they wait.
        with self._lock:
            now = self._clock()
            start = max(now, self._next_connect)
            self._next_connect = start + 1.0 / self.connects_per_second
        delay = start - now
        if delay > 0:
            self._sleep(delay)

    @contextmanager
    def connection(self, *, wait_s: float = 600.0, user: str | None = None) -> Iterator[None]:
        """Hold one connection slot for the ``with`` body, after waiting for a connect token.

        Raises :class:`TransientError` when no slot frees up within ``wait_s`` seconds.
        """
        if not self._slots.acquire(timeout=wait_s):
            raise TransientError(
                f"no free IMAP connection slot to {self.host} within {wait_s:.0f} s "
                f"(cap {self.connections})",
                code="SXM-IMAP-001",
                user=user,
                remedy="Other users hold every slot; lower options.concurrency.users or raise "
                "connections_per_server within Scalix's IMAP_CONNECTION_LIMIT.",
            )
        try:
            with self._lock:
                self._in_use += 1
            try:
                self._wait_for_token()
                yield
            finally:
                with self._lock:
                    self._in_use -= 1
        finally:
            self._slots.release()


_registry: dict[str, HostLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(host: str, *, connections: int, connects_per_second: float) -> HostLimiter:
    """The process-wide limiter for ``host`` (created with these caps on first use).

    Later calls with different caps get the existing limiter: one server, one budget.
    """
    key = host.lower()
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = HostLimiter(
                host, connections=connections, connects_per_second=connects_per_second
            )
            _registry[key] = limiter
        return limiter
