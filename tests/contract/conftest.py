"""The sink contract suite's fixtures: one ``Sink`` per destination (IMAP, Maildir, mbox).

Every test in this directory runs once per sink. The IMAP sink is the test bed's Dovecot
destination (``testbed`` fixture, engineer A); each test uses its own login name, so its
mailbox starts empty. Ledger rows and staged bytes are written directly through the journal
and the staging store, as the extract step writes them.
"""

from __future__ import annotations

import itertools
import textwrap
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig, parse_config
from scalix_migrate.destinations.base import Destination
from scalix_migrate.records import (
    FolderCursor,
    LedgerEntry,
    ScalixUser,
    SourceFolder,
    SpecialFolder,
)
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import Journal
from scalix_migrate.user_context import open_destination


@dataclass(frozen=True)
class Msg:
    body: bytes
    flags: frozenset[str]
    internaldate: datetime


def base_config(tmp_path: Path, destination: str, **options: Any) -> TenantConfig:
    """A tenant config with the given destination YAML block (source details are unused)."""
    return parse_config(config_text(tmp_path, destination, **options))


def config_text(tmp_path: Path, destination: str, **options: Any) -> str:
    """The YAML of :func:`base_config`."""
    opts = "\n".join(f"  {line}" for line in _yaml_options(options))
    text = (
        textwrap.dedent(
            """\
        tenant: contract
        allow_inline_secrets: true
        source:
          server: scalix.invalid
          server_names: [mail]
          admin_user: sxadmin
          admin_password: unused
          test_user: test@example.com
        """
        )
        + destination
        + f"options:\n  staging_dir: {tmp_path / 'staging'}\n"
        + opts
        + "\n"
    )
    return text


def _yaml_options(options: dict[str, Any]) -> list[str]:
    import yaml

    return yaml.safe_dump(options, default_flow_style=False).splitlines() if options else []


@dataclass
class Sink:
    kind: str
    make_config: Callable[..., TenantConfig]
    user: ScalixUser
    journal: Journal
    tmp_path: Path
    _uidvalidity: itertools.count[int]

    def config(self, **options: Any) -> TenantConfig:
        return self.make_config(**options)

    def open(self, cfg: TenantConfig) -> Destination:
        return open_destination(cfg, self.user)

    def stage(
        self,
        cfg: TenantConfig,
        folder: str,
        messages: Sequence[Msg],
        *,
        special: SpecialFolder | None = None,
        uidvalidity: int | None = None,
        first_uid: int = 1,
    ) -> FolderCursor:
        """Record ``messages`` as extracted into ``folder`` (empty list: an empty folder)."""
        from scalix_migrate.message_identity import message_id_of

        store = StagingStore(cfg.options.staging_dir, cfg.tenant, self.user.key)
        source = SourceFolder(folder, folder, "/", frozenset(), special)
        uv = uidvalidity or next(self._uidvalidity)
        cursor = self.journal.open_folder(cfg.tenant, self.user.key, source, uv)
        entries = []
        for i, m in enumerate(messages):
            digest = store.put(m.body)
            entries.append(
                LedgerEntry(
                    folder=folder,
                    uidvalidity=uv,
                    uid=first_uid + i,
                    sha256=digest,
                    size=len(m.body),
                    internaldate=m.internaldate,
                    flags=m.flags,
                    message_id=message_id_of(m.body),
                )
            )
        return self.journal.record_batch(
            cfg.tenant, self.user.key, cursor, entries, first_uid + len(messages) - 1
        )


@pytest.fixture(params=["imap", "maildir", "mbox"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    kind = request.param
    tag = uuid.uuid4().hex[:10]
    user = ScalixUser(
        display_name=f"Kim Lee {tag}",
        mailnode="mail",
        auth_id=f"klee{tag}",
        addresses=(f"kim.lee-{tag}@example.com",),
    )
    if kind == "imap":
        testbed = request.getfixturevalue("testbed")
        secret = tmp_path / "dest-password"
        secret.write_text(testbed.dest_password)
        block = textwrap.dedent(
            f"""\
            destination:
              type: imap
              host: 127.0.0.1
              port: {testbed.dest_imap_port}
              tls: none
              preset: dovecot
              login_template: "{{local_part}}@dest.test"
              password: "file:{secret}"
            """
        )
    else:
        block = f'destination:\n  type: {kind}\n  path: "{tmp_path / kind}/{{local_part}}"\n'

    def make(**options: Any) -> TenantConfig:
        return base_config(tmp_path, block, **options)

    with Journal.open(directory=tmp_path / "state") as journal:
        yield Sink(kind, make, user, journal, tmp_path, itertools.count(1000))
