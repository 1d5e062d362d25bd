"""An in-process SSH server (paramiko) that runs the emulated Scalix admin commands.

One listening socket on ``127.0.0.1``, a generated ECDSA host key, password authentication
for one account. Each ``exec`` request is interpreted by :mod:`scalix_migrate.sandbox.shell`
(the sh subset the admin client uses) in its own thread; stdout, stderr and the exit status go
back on the channel. Shells, PTYs, port forwarding and SFTP are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
import threading
import time
from pathlib import Path

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

from scalix_migrate.sandbox.shell import execute

_log = logging.getLogger(__name__)
_CLIENT_CLOSE_WAIT_S = 30.0
_TRANSPORT_LOG = f"{__name__}.transport"
# paramiko logs a client's ordinary hang-up as an ERROR; without any handler Python would print
# it to stderr. Applications that configure logging still receive these records.
logging.getLogger(_TRANSPORT_LOG).addHandler(logging.NullHandler())


class _HangUpFilter(logging.Filter):
    """Drop paramiko's ERROR for a client that simply hung up (Prefect's logging shows it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Connection reset by peer" not in record.getMessage()


logging.getLogger(_TRANSPORT_LOG).addFilter(_HangUpFilter())


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:<base64, unpadded>`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: SandboxSshServer) -> None:
        self._server = server

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        good_user = hmac.compare_digest(username.encode(), self._server.user.encode())
        good_pw = hmac.compare_digest(password.encode(), self._server.password.encode())
        return AUTH_SUCCESSFUL if good_user and good_pw else AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        line = command.decode("utf-8", "surrogateescape")
        threading.Thread(
            target=self._server.run_exec, args=(channel, line), daemon=True, name="ssh-exec"
        ).start()
        return True


class SandboxSshServer:
    """Serves admin commands over SSH until :meth:`stop`; ``start()`` returns the port."""

    def __init__(self, directory_path: Path, *, user: str, password: str, port: int = 0) -> None:
        self.directory_path = Path(directory_path)
        self.user = user
        self.password = password
        self.host_key = paramiko.ECDSAKey.generate(bits=256)
        self.host_key_fingerprint = fingerprint(self.host_key)
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._transports: list[paramiko.Transport] = []
        self._lock = threading.Lock()
        self.port = 0

    def start(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._requested_port))
        sock.listen(16)
        # Bounded accept waits, so stop() is noticed within a second.
        sock.settimeout(0.5)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="ssh-accept")
        self._thread.start()
        return self.port

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(
                target=self._handshake, args=(conn,), daemon=True, name="ssh-handshake"
            ).start()

    def _handshake(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.set_log_channel(_TRANSPORT_LOG)
        transport.add_server_key(self.host_key)
        with self._lock:
            self._transports = [t for t in self._transports if t.is_active()]
            self._transports.append(transport)
        try:
            transport.start_server(server=_Interface(self))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # A client that hangs up during the handshake (port probes do): drop it.
            _log.debug("ssh handshake failed: %s", type(exc).__name__)
            transport.close()

    def run_exec(self, channel: paramiko.Channel, line: str) -> None:
        """Execute one command line and report its output and exit status on the channel.

        This runs while the transport thread may still be sending the reply to the exec
        request, so it never closes first: it sends output, exit status and EOF (all of which
        a client accepts before the reply), then waits, bounded, for the client's close.
        """
        try:
            result = execute(line, self.directory_path)
            if result.stdout:
                channel.sendall(result.stdout.encode("utf-8", "surrogateescape"))
            if result.stderr:
                channel.sendall_stderr(result.stderr.encode("utf-8", "surrogateescape"))
            channel.send_exit_status(result.exit_status)
            channel.shutdown_write()
            deadline = time.monotonic() + _CLIENT_CLOSE_WAIT_S
            while not channel.closed and time.monotonic() < deadline:
                time.sleep(0.02)
        except OSError as exc:
            _log.debug("ssh channel closed early: %s", type(exc).__name__)
        finally:
            channel.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.close()
