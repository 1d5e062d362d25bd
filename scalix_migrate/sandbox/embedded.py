"""The embedded Scalix sandbox: pymap IMAP + paramiko SSH in-process, seeded with the demo tenant.

::

    with Sandbox(workdir) as sb:
        cfg_path = sb.write_config(workdir / "sandbox.yaml", {"type": "maildir", "path": …})

Both servers listen on free ``127.0.0.1`` ports and read one directory file
(``<workdir>/directory.json``), which the SSH admin commands modify. The attributes mirror
the real-server test bed's (``directory_path``, ``imap_port``, ``ssh_port``, ``ssh_user``,
``ssh_password``, ``host_key_fingerprint``, ``admin_user``, ``admin_password``, ``bin_dir``),
plus ``start_seconds`` (measured start-up time). Passwords are random per sandbox; they are
written only to secret files (``<workdir>/secrets/``, mode 0600 in a 0700 directory) that the
tenant config names as ``file:`` references, so no password reaches a Prefect deployment, a
flow run's parameters or a log; they are never logged or repr'd.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from scalix_migrate.sandbox.directory import (
    Directory,
    DirectoryUser,
    SeedMessage,
    locked_directory,
)
from scalix_migrate.sandbox.imap_server import SandboxImapServer
from scalix_migrate.sandbox.seed import ADMIN_AUTH_ID, TEST_USER, demo_tenant
from scalix_migrate.sandbox.ssh_server import SandboxSshServer


class Sandbox:
    """A running Scalix stand-in; a context manager (``start()``/``stop()`` also work).

    ``seed=False`` starts with the demo directory's admin only (no users, no messages), for
    tests that add their own users with :meth:`add_user` / :meth:`seed_messages`.
    """

    host = "127.0.0.1"
    bin_dir = "/opt/scalix/bin"
    ssh_user = "root"
    admin_user = ADMIN_AUTH_ID
    test_user = TEST_USER

    def __init__(self, workdir: Path, *, seed: bool = True) -> None:
        self.workdir = Path(workdir)
        self.directory_path = self.workdir / "directory.json"
        self.secrets_dir = self.workdir / "secrets"
        self.ssh_password = secrets.token_urlsafe(18)
        self.admin_password = secrets.token_urlsafe(18)
        self._seed = seed
        self._imap: SandboxImapServer | None = None
        self._ssh: SandboxSshServer | None = None
        self.imap_port = 0
        self.ssh_port = 0
        self.host_key_fingerprint = ""
        self.start_seconds = 0.0
        self.server_names: list[str] = []

    def __repr__(self) -> str:
        return f"Sandbox(imap={self.imap_port}, ssh={self.ssh_port}, dir={self.directory_path})"

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_secret("admin_password", self.admin_password)
        self._write_secret("ssh_password", self.ssh_password)
        tenant = demo_tenant()
        directory = tenant.directory
        admin = directory.find(ADMIN_AUTH_ID)
        assert admin is not None
        admin.password = self.admin_password
        if not self._seed:
            directory.users = [admin]
        directory.save(self.directory_path)
        self.server_names = list(directory.mailnodes)
        self._imap = SandboxImapServer(self.directory_path)
        self._ssh = SandboxSshServer(
            self.directory_path, user=self.ssh_user, password=self.ssh_password
        )
        try:
            self.imap_port = self._imap.start()
            self.ssh_port = self._ssh.start()
            self.host_key_fingerprint = self._ssh.host_key_fingerprint
            for user in directory.users:
                self._imap.add_mailbox(user)
                self._imap.append(user, tenant.messages.get(user.name, []))
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def write_secret(self, name: str, value: str) -> str:
        """Keep ``value`` as one of this sandbox's secret files; returns its ``file:`` reference."""
        self._write_secret(name, value)
        return self.secret_ref(name)

    def _write_secret(self, name: str, value: str) -> None:
        """One secret per file, created 0600 (never world-readable, not even for a moment)."""
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        path = self.secrets_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
        path.chmod(0o600)

    def secret_ref(self, name: str) -> str:
        """The ``file:`` reference to one of this sandbox's secrets."""
        return f"file:{self.secrets_dir / name}"

    def stop(self) -> None:
        if self._ssh is not None:
            self._ssh.stop()
            self._ssh = None
        if self._imap is not None:
            self._imap.stop()
            self._imap = None

    # --- the test bed's helpers --------------------------------------------------------------

    def directory(self) -> Directory:
        with locked_directory(self.directory_path, write=False) as d:
            return d

    def update_directory(self, fn: Callable[[Directory], None]) -> None:
        with locked_directory(self.directory_path, write=True) as d:
            fn(d)

    def add_user(self, user: DirectoryUser) -> None:
        """Add ``user`` to the directory and create its mailbox with ``user.folders``."""
        self.update_directory(lambda d: d.users.append(user))
        self._server().add_mailbox(user)

    def seed_messages(self, user_identity: str, messages: list[SeedMessage]) -> None:
        """Append messages (bytes, flags, INTERNALDATE kept) to a user's folders."""
        user = self.directory().find(user_identity)
        if user is None:
            raise KeyError(f"no sandbox user {user_identity!r}")
        self._server().append(user, messages)

    def _server(self) -> SandboxImapServer:
        if self._imap is None:
            raise RuntimeError("the sandbox is not running")
        return self._imap

    # --- configuration ----------------------------------------------------------------------

    def config_data(
        self, destination: dict[str, Any], *, tenant: str = "sandbox"
    ) -> dict[str, Any]:
        """The tenant config (as a mapping) that points at this sandbox."""
        state = self.workdir / "state"
        return {
            "tenant": tenant,
            "source": {
                "server": self.host,
                "server_names": list(self.server_names),
                "admin_user": self.admin_user,
                "admin_password": self.secret_ref("admin_password"),
                "test_user": self.test_user,
                "ssh": {
                    "port": self.ssh_port,
                    "user": self.ssh_user,
                    "password": self.secret_ref("ssh_password"),
                    "host_key_fingerprint": self.host_key_fingerprint,
                    "bin_dir": self.bin_dir,
                    "connect_timeout_s": 10,
                    "command_timeout_s": 60,
                },
                "imap": {"port": self.imap_port, "tls": "none", "timeout_s": 30},
            },
            "destination": destination,
            "options": {
                "staging_dir": str(self.workdir / "staging"),
                "reports_dir": str(self.workdir / "reports"),
                "state": {"dir": str(state)},
            },
        }

    def write_config(
        self, path: Path, destination: dict[str, Any], *, tenant: str = "sandbox"
    ) -> Path:
        """Write a tenant YAML for this sandbox (secrets as ``file:`` references; mode 0600)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(
            self.config_data(destination, tenant=tenant), sort_keys=False, allow_unicode=True
        )
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path
