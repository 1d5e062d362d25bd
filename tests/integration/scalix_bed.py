"""Shared helpers for engineer C's integration tests (discovery, preflight, restart-service).

They always run on the real-server test bed (``testbed`` from tests/conftest.py: OpenSSH sshd
with the admin-command emulators, Dovecot as Scalix and as destination); when a server is
missing that fixture fails, it never skips.

Isolation and speed: the test bed is shared by the whole session, and other tests keep adding
users to its mailnodes. Discovery runs three admin commands per user of the configured server
names (``options.users.include`` is applied only after them), and on the test bed each command
is its own short Python process, so a config naming the shared mailnodes costs time in
proportion to everything the session has added. Each test therefore gets a :class:`TenantSlice`:
a mailnode of its own (``source.server_names``), holding only the users the test adds and, when
asked for, an administrator of its own (full administrator with mboxadmin). What a test
discovers is then exactly what it set up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.sandbox.directory import Directory, DirectoryUser
from tests.testbed import ScalixTestbed


@dataclass
class TenantSlice:
    """A mailnode of the test bed that belongs to one test, and optionally its own admin."""

    testbed: ScalixTestbed
    mailnode: str
    admin: DirectoryUser | None

    @classmethod
    def create(cls, testbed: ScalixTestbed, *, with_admin: bool = True) -> TenantSlice:
        tag = uuid.uuid4().hex[:6]
        piece = cls(testbed, add_mailnode(testbed, f"t{tag}"), None)
        if with_admin:
            piece.admin = piece.new_user(
                "admin", full_admin=True, capabilities=["mboxadmin"], mailbox_kib=0
            )
        return piece

    # --- the test bed, for assertions ---------------------------------------------------

    @property
    def host_key_fingerprint(self) -> str:
        return self.testbed.host_key_fingerprint

    @property
    def bin_dir(self) -> Path:
        return self.testbed.bin_dir

    def directory(self) -> Directory:
        return self.testbed.directory()

    def update_directory(self, fn: Callable[[Directory], None]) -> None:
        self.testbed.update_directory(fn)

    # --- users and configs ----------------------------------------------------------------

    def new_user(self, stem: str, **kw: Any) -> DirectoryUser:
        """Add a uniquely named user (on this slice's mailnode unless ``mailnode`` is given)."""
        tag = uuid.uuid4().hex[:6]
        local = f"{stem}-{tag}"
        values: dict[str, Any] = {
            "display_name": f"{stem.title()} {tag}",
            "mailnode": self.mailnode,
            "auth_id": f"{local}@example.test",
            "addresses": [f"{local}@example.test"],
            "password": f"pw-{tag}",
            "mailbox_kib": 10,
        }
        values.update(kw)
        user = DirectoryUser(**values)
        self.testbed.add_user(user)
        return user

    def config(
        self,
        tmp_path: Path,
        *,
        destination: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        ssh: dict[str, Any] | None = None,
        **top: Any,
    ) -> TenantConfig:
        """``testbed.make_config`` (bin_dir, key file, known_hosts and pinned fingerprint,
        ``service.restart_command`` = ``<bin_dir>/service scalix restart``) for this slice:
        ``source.server_names`` is the slice's mailnode and the admin is the slice's own (else
        the test bed's). A literal ``source.admin_password`` is written to a secret file."""
        src: dict[str, Any] = {"server_names": [self.mailnode]}
        if self.admin is not None:
            src.update(admin_user=self.admin.auth_id, admin_password=self.admin.password)
        src.update(source or {})
        if "admin_password" in src:
            src["admin_password"] = secret_file(
                tmp_path, "slice_admin_password", src["admin_password"]
            )
        if ssh:
            src["ssh"] = ssh
        destination = destination or {"type": "maildir", "path": str(tmp_path / "out" / "{email}")}
        _, cfg = self.testbed.make_config(tmp_path, destination=destination, source=src, **top)
        return cfg


def add_mailnode(testbed: ScalixTestbed, name: str) -> str:
    testbed.update_directory(
        lambda d: d.mailnodes.append(name) if name not in d.mailnodes else None
    )
    return name


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    """A ``file:`` secret reference holding ``value`` (config secrets are never inline)."""
    folder = tmp_path / "secrets"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return f"file:{path}"


@pytest.fixture
def bed(testbed: ScalixTestbed) -> TenantSlice:
    """A fresh slice of the real-server test bed, with its own administrator."""
    return TenantSlice.create(testbed)


def new_user(bed: TenantSlice, stem: str, **kw: Any) -> DirectoryUser:
    return bed.new_user(stem, **kw)


def config(bed: TenantSlice, tmp_path: Path, **kw: Any) -> TenantConfig:
    return bed.config(tmp_path, **kw)
