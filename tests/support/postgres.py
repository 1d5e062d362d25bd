"""A throwaway PostgreSQL server for tests: the journal's multi-worker backend.

:func:`running_postgres` runs ``initdb`` + ``pg_ctl`` from the Debian package (or any
installation whose ``initdb``, ``pg_ctl`` and ``postgres`` sit in one directory) with its data
directory in a fresh temporary directory, listening on 127.0.0.1 on a free port, its Unix socket
in that directory too, and stops it (``pg_ctl stop -m immediate``) and removes the directory
whatever happens. PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` account when the Debian package created it, else as a system account
``sxm-postgres`` created here. Authentication is ``trust`` on loopback: the server lives as long
as the test session and holds only test data.

Missing binaries raise :class:`PostgresUnavailable` naming ``scripts/install-testbed-deps.sh``;
fixtures turn that into a failure, never a skip.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "run scripts/install-testbed-deps.sh (installs Debian's postgresql package)"
SERVICE_ACCOUNT = "sxm-postgres"
SUPERUSER = "sxm"
START_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 120


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says why and what to install."""


@dataclass(frozen=True)
class PostgresServer:
    """A running server; :meth:`url` names a database on it."""

    host: str
    port: int
    bin_dir: Path
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its SQLAlchemy URL."""
        import psycopg

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            connect_timeout=10,
            autocommit=True,
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name checked above: no quoting issue
        return self.url(name)


def find_bin_dir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Looked for on ``PATH`` (following symlinks: ``/usr/local/bin/initdb`` may point into the
    package) and in Debian's ``/usr/lib/postgresql/<version>/bin``, newest version first.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
        candidates.append(Path(on_path).parent)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        candidates.extend(v / "bin" for v in versions)
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
        f"/usr/lib/postgresql/*/bin; {INSTALL_HINT}"
    )


def _service_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as (None: we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_ACCOUNT):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_ACCOUNT,
        ],
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    return pwd.getpwnam(SERVICE_ACCOUNT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: Sequence[str], account: pwd.struct_passwd | None, what: str) -> None:
    full = ["runuser", "-u", account.pw_name, "--", *argv] if account else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if done.returncode != 0:
        raise PostgresUnavailable(
            f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}"
        )


@contextmanager
def running_postgres(bin_dir: Path | None = None) -> Iterator[PostgresServer]:
    """Start a private PostgreSQL server; stop it and delete its files on exit."""
    bin_dir = bin_dir or find_bin_dir()
    account = _service_account()
    # Not under pytest's tmp_path: that is 0700 root, unreadable for the service account.
    base = Path(tempfile.mkdtemp(prefix="sxm-pg-"))
    try:
        if account:
            os.chown(base, account.pw_uid, account.pw_gid)
        data = base / "data"
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            account,
            "initdb",
        )
        port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        _run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(base / "server.log"),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-o",
                options,
                "start",
            ],
            account,
            "pg_ctl start",
        )
        try:
            yield PostgresServer("127.0.0.1", port, bin_dir, data)
        finally:
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ],
                account,
                "pg_ctl stop",
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


_SERVER = pytest.StashKey[PostgresServer]()


def session_postgres(request: pytest.FixtureRequest) -> PostgresServer:
    """One server per pytest session, however many modules ask; stopped at session end.

    Test modules wrap this in their own fixture; the server is shared through the config
    stash and stopped by a config cleanup, which runs even when tests failed.
    """
    config = request.config
    if _SERVER in config.stash:
        return config.stash[_SERVER]
    stack = ExitStack()
    try:
        server = stack.enter_context(running_postgres())
    except (PostgresUnavailable, subprocess.TimeoutExpired, OSError) as exc:
        stack.close()
        pytest.fail(f"PostgreSQL cannot start: {exc}", pytrace=False)
    config.add_cleanup(stack.close)
    config.stash[_SERVER] = server
    return server
