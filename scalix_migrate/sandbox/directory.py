"""The directory model that drives both Scalix stand-ins.

One JSON file holds what a Scalix server knows about its users and services: users (with
ordered addresses, the first primary), mailnodes, class, capabilities, lock state, whether a
message store exists, store limits, open client sessions, and the state of each service. The
admin-command emulators (:mod:`scalix_migrate.sandbox.admin_commands`) read and write it; the
IMAP stand-ins read it to authenticate ``mboxadmin:<admin>:<user>`` logins. Mailbox *contents*
are not in this file: they live in the IMAP server (Dovecot's maildirs, pymap's memory) and
are seeded from :class:`SeedMessage` lists.

Writes take an exclusive ``fcntl`` lock on ``<file>.lock`` and replace the file atomically, so
the emulators can run concurrently (several SSH sessions) without losing updates.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

SERVICE_STATES = ("Enabled", "Started", "Stopped", "Disabled")

DEFAULT_SERVICES: dict[str, str] = {
    "Request Server": "Started",
    "Local Delivery": "Started",
    "Service Router": "Started",
    "IMAP Server": "Enabled",
    "POP3 Interface": "Enabled",
    "Remote Client Interface": "Enabled",
    "SMTP Relay": "Enabled",
    "Session Monitor": "Started",
    "Directory Relay Server": "Started",
}


@dataclass
class FolderSpec:
    """A folder of a seeded mailbox. ``name`` is Unicode and ``/``-separated."""

    name: str
    special: str | None = None  # X-SpecialFolder value, e.g. "SentItems"
    folder_class: str | None = None  # X-FolderClass, e.g. "IPF.Appointment"


@dataclass
class SeedMessage:
    folder: str
    body: bytes
    flags: list[str]
    internaldate: datetime  # aware


@dataclass
class DirectoryUser:
    display_name: str
    mailnode: str
    auth_id: str
    addresses: list[str]  # ordered: the first is the primary address
    password: str
    user_class: str = "Full"  # "Full" | "Limited"
    full_admin: bool | None = False  # None: omshowu prints no full-administrator line
    capabilities: list[str] = field(default_factory=list)  # e.g. ["mboxadmin"]
    locked: bool = False
    has_message_store: bool = True
    store_limit_kib: int = 0  # 0 = unlimited
    mailbox_kib: int = 0
    sessions: list[str] = field(default_factory=list)  # e.g. ["IMAP client", "SWA client"]
    folders: list[FolderSpec] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.display_name}/{self.mailnode}"

    @property
    def primary_address(self) -> str:
        return self.addresses[0] if self.addresses else self.auth_id

    def matches(self, identity: str) -> bool:
        """True when ``identity`` names this user in any of the forms Scalix accepts."""
        ident = identity.strip().lower()
        forms = {
            self.display_name.lower(),
            self.name.lower(),
            self.auth_id.lower(),
            f"{self.name}/CN={self.display_name}".lower(),
        }
        forms.update(a.lower() for a in self.addresses)
        return ident in forms


@dataclass
class Directory:
    mailnodes: list[str]  # the first is the primary mailnode
    users: list[DirectoryUser]
    services: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SERVICES))
    # Services named here come back as "Stopped" after a restart (to test a failed restart).
    broken_services: list[str] = field(default_factory=list)
    hostname: str = "scalix.example.test"
    # Kept by the sandbox's admin commands (admin_commands.py): the scalix-tomcat init
    # script's state ("Started" | "Stopped") and each service's last start date token.
    tomcat_state: str = "Started"
    service_dates: dict[str, str] = field(default_factory=dict)

    def find(self, identity: str) -> DirectoryUser | None:
        for u in self.users:
            if u.matches(identity):
                return u
        return None

    def authenticate(self, login: str, password: str) -> DirectoryUser | None:
        """Scalix's IMAP LOGIN: a user, or ``mboxadmin:<admin>:<target>`` with the admin's
        password when the admin holds mboxadmin. Returns the user whose mailbox opens."""
        if login.lower().startswith("mboxadmin:"):
            parts = login.split(":", 2)
            if len(parts) != 3:
                return None
            admin, target = self.find(parts[1]), self.find(parts[2])
            if admin is None or target is None or admin.password != password:
                return None
            if "mboxadmin" not in admin.capabilities:
                return None
            return target
        user = self.find(login)
        if user is None or user.password != password or user.locked:
            return None
        return user

    # --- persistence ----------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Directory:
        raw = json.loads(text)
        users = []
        for u in raw.pop("users"):
            u["folders"] = [FolderSpec(**f) for f in u.get("folders", [])]
            users.append(DirectoryUser(**u))
        return cls(users=users, **raw)

    @classmethod
    def load(cls, path: Path) -> Directory:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def save(self, path: Path) -> None:
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".dir-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())
        os.replace(tmp, path)


@contextlib.contextmanager
def locked_directory(path: Path, *, write: bool) -> Iterator[Directory]:
    """Load the directory under a lock; save it back on exit when ``write``."""
    path = Path(path)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        try:
            directory = Directory.load(path)
            yield directory
            if write:
                directory.save(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
