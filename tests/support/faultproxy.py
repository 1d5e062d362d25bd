"""A TCP fault proxy for tests: asyncio, 127.0.0.1 only, in a thread of its own.

:class:`FaultProxy` listens on a free loopback port and forwards every connection to one
upstream port. Each accepted connection takes the next :class:`Fault` from the plan given to
:meth:`FaultProxy.plan`; connections beyond the plan get the fault given to
:meth:`FaultProxy.always` (none by default). So a test can say "the second connection drops
mid-FETCH, the rest are fine", or "every connection drops when this message comes down".
Faults act on the server-to-client direction, which is where a client notices them, except
``cut_upload_on``:

* ``drop_after=N``: forward N bytes of the server's reply, then reset both sides.
* ``drop_on=b"..."``: when the server's bytes contain the pattern, the chunk holding it is
  swallowed and both sides are closed: the server did the work, the client never hears of it
  (e.g. ``b"[APPENDUID"``: the APPEND was stored, its ``OK`` was lost).
* ``stall_after=N`` / ``stall_on=b"..."``: after N bytes, or from the chunk holding the
  pattern, stop forwarding (both ways) until the connection is closed by either side; the
  client's timeout must end it.
* ``cut_upload_on=b"..."`` (client-to-server): the client's chunk holding the pattern is cut
  64 bytes after it and both sides are reset (e.g. ``b"APPEND "``: a message half sent).
* ``trickle=(size, delay)``: forward the server's bytes ``size`` at a time, ``delay`` seconds
  apart (slow, but not dead).

Every loop is bounded: a stalled connection is held at most :data:`MAX_STALL_S`, and
:meth:`FaultProxy.close` ends every connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

MAX_STALL_S = 120.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Fault:
    """What happens to one proxied connection (see the module docstring)."""

    drop_after: int | None = None
    drop_on: bytes | None = None
    stall_after: int | None = None
    stall_on: bytes | None = None
    cut_upload_on: bytes | None = None
    # Sent to the client in place of the chunk ``drop_on`` swallows (e.g. a server's BYE).
    say_instead: bytes = b""
    trickle: tuple[int, float] | None = None
    # Bytes of the server's stream to let through before the fault arms; the counts above
    # start there. Skips the greeting, a TLS or SSH handshake, the login.
    arm_after: int = 0


@dataclass
class _Conn:
    """One proxied connection: its fault, where that fault's counting starts, bytes sent."""

    fault: Fault
    base: int = 0
    sent: int = 0


class FaultProxy:
    """Forward 127.0.0.1:``port`` to 127.0.0.1:``upstream_port``, injecting planned faults."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0
        self.faults_fired = 0
        self._plan: deque[Fault | None] = deque()
        self._always = Fault()
        self._limit: int | None = None
        self._guard = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._live: list[_Conn] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    # --- lifetime ------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_closed() and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def plan(self, *faults: Fault | None) -> None:
        """The faults of the next connections, in order (None: that one passes through)."""
        with self._guard:
            self._plan.extend(faults)

    def always(self, fault: Fault, *, times: int | None = None) -> None:
        """The fault of every connection the plan does not cover: a permanent fault, or one
        that stops after firing ``times`` times in all (counted from now)."""
        with self._guard:
            self._always = fault
            self._limit = None if times is None else self.faults_fired + times

    def disarm(self) -> None:
        with self._guard:
            self._plan.clear()
            self._always = Fault()
            self._limit = None

    def live_sent(self) -> list[int]:
        """Bytes each open connection has carried from the server so far."""
        with self._guard:
            return [c.sent for c in self._live]

    def arm_live(self, fault: Fault) -> None:
        """Give every open connection ``fault``, counted from the bytes it has sent so far
        (for protocols whose handshake length is not known in advance, such as SSH)."""
        with self._guard:
            for conn in self._live:
                conn.fault, conn.base = fault, conn.sent + fault.arm_after

    # --- the event loop ------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            _abort(w)

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        with self._guard:
            self.connections += 1
            fault = (self._plan.popleft() if self._plan else self._always) or Fault()
            conn = _Conn(fault, base=fault.arm_after)
            self._live.append(conn)
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _abort(c_writer)
            return
        self._writers.update((c_writer, s_writer))
        stalled = asyncio.Event()
        up = asyncio.ensure_future(self._pump_up(c_reader, s_writer, conn, stalled))
        down = asyncio.ensure_future(self._pump_down(s_reader, c_writer, conn, stalled))
        try:
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
            if stalled.is_set():
                # Hold the connection open and silent until the client gives up (or the cap).
                await asyncio.wait([up], timeout=MAX_STALL_S)
        finally:
            for task in (up, down):
                task.cancel()
            for w in (c_writer, s_writer):
                _abort(w)
                self._writers.discard(w)
            with self._guard:
                self._live.remove(conn)

    async def _pump_up(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        stalled: asyncio.Event,
    ) -> None:
        while data := await reader.read(_CHUNK):
            if stalled.is_set():
                continue  # swallowed: a stalled server reads nothing either
            with self._guard:
                pattern = conn.fault.cut_upload_on
            at = data.find(pattern) if pattern and not self._spent() else -1
            if at >= 0:
                # The command and a little of what follows reach the server, then the line dies.
                writer.write(data[: at + len(pattern) + 64])
                await writer.drain()
                self._fired()
                return
            writer.write(data)
            await writer.drain()

    async def _pump_down(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        stalled: asyncio.Event,
    ) -> None:
        while data := await reader.read(_CHUNK):
            with self._guard:
                fault, base, sent = conn.fault, conn.base, conn.sent
            armed = max(0, base - sent)  # offset in ``data`` where the fault is armed
            cut = None  # bytes of ``data`` to forward before the fault fires
            if self._spent():
                fault = Fault()
            if fault.drop_on is not None and fault.drop_on in data[armed:]:
                data = fault.say_instead
                cut = len(data)
            elif fault.stall_on is not None and fault.stall_on in data[armed:]:
                cut = 0
                stalled.set()
            elif fault.drop_after is not None and sent + len(data) >= base + fault.drop_after:
                cut = max(0, base + fault.drop_after - sent)
            elif fault.stall_after is not None and sent + len(data) >= base + fault.stall_after:
                cut = max(0, base + fault.stall_after - sent)
                stalled.set()
            if cut is not None:
                writer.write(data[:cut])
                await writer.drain()
                self._fired()
                return
            if fault.trickle is not None and sent + len(data) > base:
                size, delay = fault.trickle
                for piece in _pieces(data, size):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(delay)
            else:
                writer.write(data)
                await writer.drain()
            with self._guard:
                conn.sent += len(data)

    def _spent(self) -> bool:
        with self._guard:
            return self._limit is not None and self.faults_fired >= self._limit

    def _fired(self) -> None:
        with self._guard:
            self.faults_fired += 1


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), max(1, size)):
        yield data[i : i + size]


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        transport = writer.transport
        if not transport.is_closing():
            transport.abort()  # RST, like a dropped connection, not a polite FIN
