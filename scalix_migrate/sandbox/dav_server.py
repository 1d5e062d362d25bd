"""An embedded CalDAV/CardDAV server for the demo and the tests: Radicale, in a subprocess.

::

    with RadicaleServer(workdir) as dav:
        dav.add_user("kim.lee@acme.test", "pw")
        dav.url  # "http://127.0.0.1:<port>/"

Radicale (a maintained CalDAV/CardDAV server on PyPI) runs as ``python -m radicale`` on a free
``127.0.0.1`` port with file storage under ``<workdir>/collections``, htpasswd logins
(``plain``: the sandbox's passwords are random per run and written nowhere else) and
``owner_only`` rights, so each user sees only ``/<user>/``. A subprocess, not a thread, so it
can be killed in a crash test and its own logging stays apart from ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RadicaleServer:
    """A running Radicale; ``start()``/``stop()`` or a with-block."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, max_resource_size: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.storage = self.workdir / "collections"
        self.htpasswd = self.workdir / "htpasswd"
        self.log_file = self.workdir / "radicale.log"
        self.max_resource_size = max_resource_size
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._users: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RadicaleServer(port={self.port}, users={len(self._users)})"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def add_user(self, login: str, password: str) -> None:
        """Allow ``login`` (takes effect at once: Radicale re-reads the file per request)."""
        self._users[login] = password
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"{u}:{p}\n" for u, p in sorted(self._users.items()))
        tmp = self.htpasswd.with_suffix(".tmp")
        tmp.write_text(lines, encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, self.htpasswd)

    def start(self) -> RadicaleServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.htpasswd.exists():
            self.add_user("sxm-nobody", os.urandom(12).hex())
        self.port = _free_port()
        args = [
            sys.executable,
            "-m",
            "radicale",
            "--config",
            "",
            "--server-hosts",
            f"{self.host}:{self.port}",
            "--storage-filesystem-folder",
            str(self.storage),
            "--auth-type",
            "htpasswd",
            "--auth-htpasswd-filename",
            str(self.htpasswd),
            "--auth-htpasswd-encryption",
            "plain",
            "--rights-type",
            "owner_only",
            "--logging-level",
            "warning",
        ]
        if self.max_resource_size is not None:
            args += ["--server-max-resource-size", str(self.max_resource_size)]
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=1.0),
            ):
                return
            time.sleep(0.05)
        tail = self.log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"Radicale did not start on port {self.port}: {tail}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> RadicaleServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
