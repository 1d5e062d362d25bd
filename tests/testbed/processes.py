"""Process plumbing for the test bed: free ports, binaries, daemons in their own process group.

Every daemon is started with ``start_new_session=True`` so that :func:`stop_process_group` can
end it *and* the children it forked (Dovecot's auth/imap/login processes, sshd's per-connection
children) with one signal, which is what keeps a failed test run from leaving daemons behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = (
    "run scripts/install-testbed-deps.sh as root (it installs dovecot-imapd, openssh-server "
    "and openssl from Debian packages)"
)


class TestbedError(RuntimeError):
    """The test bed cannot be set up; the message says what is missing and how to fix it."""


def require_binary(name: str, *candidates: str) -> str:
    """Return the path of a server binary, or raise naming the install script."""
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise TestbedError(
        f"{name} is not installed (looked in {', '.join(candidates) or 'PATH'}); {INSTALL_HINT}"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    *,
    timeout_s: float,
    log_file: Path | None = None,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll until 127.0.0.1:port accepts connections; bounded by ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None and process.returncode != 0:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    tail = ""
    if log_file is not None and log_file.exists():
        tail = "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
    raise TestbedError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s{tail}")


def run_checked(argv: list[str], *, timeout_s: float = 30.0) -> str:
    """Run a short helper command (openssl, ssh-keygen); raise with its stderr on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise TestbedError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def start_daemon(argv: list[str], *, log_file: Path) -> subprocess.Popen[bytes]:
    """Start a daemon in a new session with all its output going to ``log_file``.

    Dovecot's children inherit and keep stdout open, so output is never a pipe."""
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc), children first by depth."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    frontier = [pid]
    while frontier and len(found) < 10_000:
        children = [c for p in frontier for c in parents.get(p, [])]
        found.extend(children)
        frontier = children
    return found


def stop_process_group(process: subprocess.Popen[bytes], *, timeout_s: float = 5.0) -> None:
    """SIGTERM the daemon's whole process group, then SIGKILL whatever is left.

    Descendants that left the group (sshd's per-connection children call setsid()) are
    collected first and killed too."""
    strays = descendants(process.pid)
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        process.poll()
        return
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(pgid):
            break
        time.sleep(0.05)
    _kill_group_leftovers(pgid)
    for pid in strays:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group_leftovers(pgid: int) -> None:
    # Children that outlive the leader (e.g. an imap process finishing a command) still carry
    # the group id: give them a moment, then kill.
    deadline = time.monotonic() + 2.0
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
