"""The demo's calendars and address books: an embedded Radicale, and the per-user check.

:func:`start_dav` starts Radicale (``scalix_migrate.sandbox.dav_server``) with a login for every
address of the sandbox's users (one random password: the sandbox's stand-in for a DAV master
password); :func:`groupware_destination` is the ``destination.calendar``/``contacts`` config
for it. After the run, :func:`groupware_checks` counts per user what the journal found,
created and verified, and lists the server's collections independently (PROPFIND): the demo
fails when the server holds another number of resources than the journal says it created.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from scalix_migrate.config import CalDavConfig, CardDavConfig, TenantConfig
from scalix_migrate.discovery import discover_users
from scalix_migrate.groupware_sync import dav_client
from scalix_migrate.sandbox.dav_server import RadicaleServer
from scalix_migrate.sandbox.directory import Directory
from scalix_migrate.steps import journal_for

KINDS = {"events": ("event",), "tasks": ("task",), "contacts": ("contact", "group")}


def start_dav(workdir: Path, directory: Directory) -> tuple[RadicaleServer, str]:
    """A running Radicale that lets every sandbox address in with one random password."""
    server = RadicaleServer(workdir).start()
    password = secrets.token_urlsafe(16)
    for user in directory.users:
        for address in user.addresses:
            server.add_user(address.lower(), password)
    return server, password


def groupware_destination(server: RadicaleServer, password: str) -> dict[str, Any]:
    """``destination.calendar`` and ``destination.contacts`` for the embedded server."""
    dav = {"url": server.url + "{email}/", "login_template": "{email}", "password": password}
    return {"calendar": {"type": "caldav", **dav}, "contacts": {"type": "carddav", **dav}}


@dataclass(frozen=True)
class GroupwareCheck:
    user: str
    found: Counter[str]
    created: Counter[str]
    verified: Counter[str]
    on_server: int  # resources the server lists in the user's collections
    message_only: int

    @property
    def ok(self) -> bool:
        created = sum(self.created.values())
        return self.on_server == created and sum(self.verified.values()) == created


def groupware_checks(cfg: TenantConfig) -> list[GroupwareCheck]:
    users = {u.key: u for u in discover_users(cfg).users}
    out: list[GroupwareCheck] = []
    with journal_for(cfg) as journal:  # the process's journal, as the steps use it
        counts = journal.groupware_counts(cfg.tenant)
        for key in sorted(counts):
            user = users.get(key)
            if user is None:
                continue
            mine = counts[key]
            found, created, verified = Counter[str](), Counter[str](), Counter[str]()
            for label, kinds in KINDS.items():
                for kind in kinds:
                    found[label] += sum(n for k, n in mine.items() if k.startswith(kind + "-"))
                    created[label] += mine[f"{kind}-stored"] + mine[f"{kind}-verified"]
                    verified[label] += mine[f"{kind}-verified"]
            listed: dict[str, int] = {}  # collection URL -> resources (one home may hold both)
            for dest in (cfg.destination.calendar, cfg.destination.contacts):
                if isinstance(dest, CalDavConfig | CardDavConfig):
                    with dav_client(dest, cfg, user) as client:
                        for name in client.collections():
                            url = client.collection_url(name)
                            listed[url] = len(client.list_etags(url))
            on_server = sum(listed.values())
            out.append(
                GroupwareCheck(key, found, created, verified, on_server, mine["item-message-only"])
            )
    return out


def print_groupware(console: Console, checks: list[GroupwareCheck]) -> None:
    table = Table(title="calendars and address books (Scalix items -> Radicale CalDAV/CardDAV)")
    for col in ("user", *[f"{k} found/created/verified" for k in KINDS], "on server", "match"):
        table.add_column(col)
    for c in checks:
        table.add_row(
            c.user,
            *[f"{c.found[k]} / {c.created[k]} / {c.verified[k]}" for k in KINDS],
            str(c.on_server),
            "[green]yes[/]" if c.ok else "[red]NO[/]",
        )
    console.print(table)
    console.print(
        "found: resources built from the staged items (a recurring meeting and its moved "
        "instances are one; identical contacts without a UID are one)"
    )
    only = sum(c.message_only for c in checks)
    if only:
        console.print(
            f"{only} contact item(s) carry only Scalix's properties part (no vCard): "
            "migrated as messages only, listed per user in the journal"
        )
