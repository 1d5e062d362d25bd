"""The real-server test bed: Dovecot as Scalix, a Dovecot destination, sshd with emulators.

:func:`running_testbed` starts everything under one temporary directory and yields a
:class:`ScalixTestbed`; leaving the context stops every daemon (process groups) and removes the
directory (kept when ``SXM_KEEP_TESTBED=1``, for reading the logs).
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scalix_migrate.config import TenantConfig, load_config
from scalix_migrate.records import FetchedMessage
from scalix_migrate.sandbox.directory import (
    Directory,
    DirectoryUser,
    FolderSpec,
    SeedMessage,
    locked_directory,
)
from tests.testbed import dovecot
from tests.testbed.certs import make_certificates
from tests.testbed.imap import fetch_all, login, storable_flags
from tests.testbed.sshd import configure_sshd, write_admin_wrappers

MAILNODES = ["primary", "branch"]
ADMIN_AUTH_ID = "sxadmin"
NORIGHT_AUTH_ID = "noright"
TEST_USER = "kim.lee@example.test"


def scalix_default_folders() -> list[FolderSpec]:
    """The folders a new Scalix mailbox has (INBOX aside), with their X-SpecialFolder."""
    return [
        FolderSpec("Sent Items", special="SentItems"),
        FolderSpec("Deleted Items", special="DeletedItems"),
        FolderSpec("Drafts", special="Drafts"),
        FolderSpec("Calendar", special="Calendar", folder_class="IPF.Appointment"),
        FolderSpec("Contacts", special="Contacts", folder_class="IPF.Contact"),
        FolderSpec("Tasks", special="Tasks", folder_class="IPF.Task"),
        FolderSpec("Notes", special="Notes", folder_class="IPF.StickyNote"),
    ]


def baseline_directory(admin_password: str) -> Directory:
    """Two mailnodes, a full admin with mboxadmin, a full admin without it, and users."""

    def user(
        display: str, node: str, auth_id: str, addresses: list[str], **kw: Any
    ) -> DirectoryUser:
        return DirectoryUser(
            display_name=display,
            mailnode=node,
            auth_id=auth_id,
            addresses=addresses,
            password=secrets.token_hex(12),
            folders=scalix_default_folders(),
            **kw,
        )

    admin = user(
        "Scalix Admin",
        MAILNODES[0],
        ADMIN_AUTH_ID,
        ["sxadmin@example.test"],
        full_admin=True,
        capabilities=["mboxadmin"],
    )
    admin.password = admin_password
    return Directory(
        mailnodes=list(MAILNODES),
        users=[
            admin,
            user(
                "No Right", MAILNODES[0], NORIGHT_AUTH_ID, ["noright@example.test"], full_admin=True
            ),
            user("Kim Lee", MAILNODES[0], "klee", [TEST_USER, "kim@example.test"]),
            user(
                "Jo Brown", MAILNODES[0], "jbrown", ["jo.brown@example.test"], user_class="Limited"
            ),
            user("Ana Silva", MAILNODES[1], "asilva", ["ana.silva@branch.example.test"]),
            user(
                "Bulk Added",
                MAILNODES[1],
                "bulk",
                ["bulk@branch.example.test"],
                has_message_store=False,
            ),
        ],
    )


@dataclass
class ScalixTestbed:
    """Everything a test needs to reach the stand-ins (interface 2 of the team brief)."""

    workdir: Path
    directory_path: Path
    bin_dir: Path
    imap_port: int
    imaps_port: int
    ca_file: Path
    ssh_port: int
    ssh_user: str
    ssh_key_file: Path
    known_hosts: Path
    host_key_fingerprint: str
    admin_user: str
    admin_password: str = field(repr=False)
    dest_imap_port: int
    dest_password: str = field(repr=False)
    dest_overquota_login: str = dovecot.OVERQUOTA_LOGIN  # 64 KiB quota on the destination
    logs: dict[str, Path] = field(default_factory=dict)
    startup_s: float = 0.0

    # --- directory ---------------------------------------------------------------------

    def directory(self) -> Directory:
        with locked_directory(self.directory_path, write=False) as d:
            return d

    def update_directory(self, fn: Callable[[Directory], None]) -> None:
        with locked_directory(self.directory_path, write=True) as d:
            fn(d)

    def add_user(self, user: DirectoryUser) -> None:
        """Add ``user`` to the directory and create its mailbox with exactly ``user.folders``
        (INBOX always exists; nothing is created when it has no message store)."""

        def add(d: Directory) -> None:
            clash = [
                u
                for u in d.users
                if u.auth_id.lower() == user.auth_id.lower()
                or any(u.matches(a) for a in user.addresses)
            ]
            if clash:
                raise ValueError(f"the directory already has a user like {user.name}")
            d.users.append(copy.deepcopy(user))

        self.update_directory(add)
        if not user.has_message_store:
            return
        with self._mailbox(user.primary_address) as client:
            for spec in user.folders:
                if not client.folder_exists(spec.name):
                    client.create_folder(spec.name)
                client.subscribe_folder(spec.name)

    # --- mailbox contents ----------------------------------------------------------------

    def seed_messages(self, user_identity: str, messages: list[SeedMessage]) -> None:
        """APPEND ``messages`` into the user's mailbox (folders created when missing).

        Dovecot cannot store backslash flags other than the five system flags, so Scalix's
        ``\\X-Forwarded``/``\\X-Has-Attach`` are dropped here; keywords (``$Forwarded``,
        ``X-Scalix-Processed``) are kept. Scalix's own flags are exercised by the embedded
        sandbox and captured-output unit tests."""
        with self._mailbox(user_identity) as client:
            known: set[str] = set()
            for msg in messages:
                if msg.folder not in known:
                    if not client.folder_exists(msg.folder):
                        client.create_folder(msg.folder)
                    known.add(msg.folder)
                client.append(
                    msg.folder, msg.body, flags=storable_flags(msg.flags), msg_time=msg.internaldate
                )

    def source_messages(self, user_identity: str, folder: str) -> list[FetchedMessage]:
        """What the Scalix stand-in holds in ``folder``, for assertions."""
        with self._mailbox(user_identity) as client:
            return fetch_all(client, folder)

    def dest_messages(self, login_name: str, folder: str) -> list[FetchedMessage]:
        """What the destination holds in ``folder`` for ``login_name``."""
        with login(self.dest_imap_port, login_name, self.dest_password) as client:
            return fetch_all(client, folder)

    @contextlib.contextmanager
    def _mailbox(self, user_identity: str) -> Iterator[Any]:
        with login(
            self.imap_port, f"mboxadmin:{self.admin_user}:{user_identity}", self.admin_password
        ) as client:
            yield client

    # --- tenant config -------------------------------------------------------------------

    def make_config(
        self, tmp_path: Path, *, destination: dict[str, Any], **overrides: Any
    ) -> tuple[Path, TenantConfig]:
        """Write ``tmp_path/tenant.yaml`` pointing at the test bed and load it.

        Secrets are written to files under ``tmp_path/secrets`` and referenced as ``file:``;
        a literal ``password`` in ``destination`` is moved to a file the same way. An IMAP
        destination without ``host`` gets the test bed's destination Dovecot (plain, with
        ``dest_password``). ``overrides`` are deep-merged into the top level."""
        secret_dir = tmp_path / "secrets"
        secret_dir.mkdir(parents=True, exist_ok=True)

        def secret(name: str, value: str) -> str:
            path = secret_dir / name
            path.write_text(value + "\n")
            path.chmod(0o600)
            return f"file:{path}"

        dest = dict(destination)
        if dest.get("type") == "imap":
            if "host" not in dest:
                dest.update(host="127.0.0.1", port=self.dest_imap_port, tls="none")
                dest.setdefault("password", self.dest_password)
            pw = dest.get("password")
            if isinstance(pw, str) and not pw.startswith(("file:", "${", "prefect-secret:")):
                dest["password"] = secret("destination_password", pw)
        data: dict[str, Any] = {
            "tenant": "testbed",
            "source": {
                "server": "127.0.0.1",
                "server_names": list(MAILNODES),
                "admin_user": self.admin_user,
                "admin_password": secret("admin_password", self.admin_password),
                "test_user": TEST_USER,
                "ssh": {
                    "host": "127.0.0.1",
                    "port": self.ssh_port,
                    "user": self.ssh_user,
                    "key_file": str(self.ssh_key_file),
                    "known_hosts": str(self.known_hosts),
                    "host_key_fingerprint": self.host_key_fingerprint,
                    "bin_dir": str(self.bin_dir),
                    "connect_timeout_s": 10,
                    "command_timeout_s": 60,
                },
                "imap": {
                    "host": "127.0.0.1",
                    "port": self.imap_port,
                    "tls": "none",
                    "timeout_s": 30,
                },
            },
            "destination": dest,
            "options": {
                "staging_dir": str(tmp_path / "staging"),
                "reports_dir": str(tmp_path / "reports"),
                "state": {"dir": str(tmp_path / "state")},
            },
            "service": {"restart_command": f"{self.bin_dir}/service scalix restart"},
        }
        _deep_merge(data, overrides)
        path = tmp_path / "tenant.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path, load_config(path)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _checkpassword_wrapper(path: Path, directory_path: Path, mail_root: Path) -> None:
    ident = dovecot.MailIdentity.for_current_process()
    script = Path(__file__).with_name("checkpassword.py")
    # -S: no site-packages; the script needs only the stdlib and directory.py.
    path.write_text(
        "#!/bin/sh\n"
        f"SXM_SANDBOX_DIRECTORY='{directory_path}' SXM_MAIL_ROOT='{mail_root}' "
        f"SXM_MAIL_UID={ident.mail_uid} SXM_MAIL_GID={ident.mail_gid}\n"
        "export SXM_SANDBOX_DIRECTORY SXM_MAIL_ROOT SXM_MAIL_UID SXM_MAIL_GID\n"
        f"exec '{sys.executable}' -S '{script}' \"$@\"\n"
    )
    path.chmod(0o755)


@contextlib.contextmanager
def running_testbed(*, fast_emulators: bool = False) -> Iterator[ScalixTestbed]:
    """Start the three servers; stop them (and remove their files) whatever happens.

    ``fast_emulators`` is for the discovery benchmark only: sshd runs a batch line that the
    sandbox's sh-subset interpreter emulates exactly in one process, not via ``/bin/sh``
    (see ``tests/testbed/emulator_entry.py``). Tests keep the default, the real shell."""
    started = time.monotonic()
    # Not pytest's tmp_path: its root is 0700 and Dovecot's mail processes run as "nobody".
    workdir = Path(tempfile.mkdtemp(prefix="sxm-testbed-"))
    os.chmod(workdir, 0o755)  # noqa: S103 (mail processes run as nobody)
    with contextlib.ExitStack() as stack:
        if os.environ.get("SXM_KEEP_TESTBED") != "1":
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        admin_password = secrets.token_urlsafe(18)
        dest_password = secrets.token_urlsafe(18)
        directory_path = workdir / "directory.json"
        baseline = baseline_directory(admin_password)
        baseline.save(directory_path)
        os.chmod(directory_path, 0o644)
        bin_dir = workdir / "bin"
        write_admin_wrappers(bin_dir, directory_path)
        certs = make_certificates(workdir / "tls")
        checkpassword = workdir / "checkpassword.sh"
        _checkpassword_wrapper(checkpassword, directory_path, workdir / "scalix" / "mail")
        source = dovecot.scalix_source(workdir / "scalix", certs, checkpassword)
        dest = dovecot.destination(workdir / "dest", dest_password)
        sshd = configure_sshd(
            workdir / "ssh",
            bin_dir=bin_dir,
            directory_path=directory_path,
            fast_emulators=fast_emulators,
        )
        for server in (source, dest, sshd):
            stack.callback(server.stop)
            server.start()
        bed = ScalixTestbed(
            workdir=workdir,
            directory_path=directory_path,
            bin_dir=bin_dir,
            imap_port=source.port,
            imaps_port=source.ssl_port or 0,
            ca_file=certs.ca_file,
            ssh_port=sshd.port,
            ssh_user=sshd.user,
            ssh_key_file=sshd.client_key,
            known_hosts=sshd.known_hosts,
            host_key_fingerprint=sshd.host_key_fingerprint,
            admin_user=ADMIN_AUTH_ID,
            admin_password=admin_password,
            dest_imap_port=dest.port,
            dest_password=dest_password,
            logs={"scalix": source.log_file, "destination": dest.log_file, "sshd": sshd.log_file},
        )
        for user in baseline.users:
            if user.has_message_store:
                with bed._mailbox(user.primary_address) as client:
                    for spec in user.folders:
                        client.create_folder(spec.name)
                        client.subscribe_folder(spec.name)
        bed.startup_s = time.monotonic() - started
        yield bed
