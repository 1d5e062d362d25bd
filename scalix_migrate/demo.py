"""``scalix-migrate demo``: the real flow against the embedded Scalix sandbox, into a Maildir
(mail) and an embedded Radicale (calendars and address books).

It starts the sandbox (pymap IMAP with Scalix's mboxadmin login, a paramiko SSH server answering
the admin commands), writes a tenant config for it, runs the migration flow, and then compares
every folder of every migrated user independently: the source as the sandbox serves it over
IMAP, the destination as the Maildir holds it (messages and bytes); per user, the events, tasks
and contacts found, created and verified, against what the DAV server lists. Like the CLI, this
is an edge module: it runs the Prefect flow, and acts on the preflight report the flow's
preflight task returned (not on the report files).
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from rich.console import Console

from scalix_migrate.config import TenantConfig, load_config
from scalix_migrate.demo_groupware import (
    groupware_checks,
    groupware_destination,
    print_groupware,
    start_dav,
)
from scalix_migrate.discovery import discover_users
from scalix_migrate.flowrun import preflight_report, run_flow
from scalix_migrate.preflight import PreflightReport
from scalix_migrate.private import private_dir
from scalix_migrate.records import ScalixUser
from scalix_migrate.sandbox.directory import Directory
from scalix_migrate.state import Journal, UserStatus
from scalix_migrate.steps import journal_for
from scalix_migrate.tables import print_table
from scalix_migrate.user_context import UserContext

if TYPE_CHECKING:
    from scalix_migrate.sandbox import Sandbox


@dataclass(frozen=True)
class FolderCheck:
    user: str
    folder: str
    dest_folder: str
    source_messages: int
    source_bytes: int
    skipped: int
    skipped_bytes: int
    dest_messages: int
    dest_bytes: int

    @property
    def ok(self) -> bool:
        return (
            self.dest_messages == self.source_messages - self.skipped
            and self.dest_bytes == self.source_bytes - self.skipped_bytes
        )


def run_demo(workdir: Path, console: Console) -> int:
    """Run the demo in ``workdir`` (recreated); 0 when every migrated folder matches and
    every user's calendars and contacts arrived once, verified."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if workdir.exists():
        shutil.rmtree(workdir)
    private_dir(workdir)  # the staging store, journal and reports are under it
    with ExitStack() as stack:
        return _run_demo(workdir, console, stack)


def _run_demo(workdir: Path, console: Console, stack: ExitStack) -> int:
    from scalix_migrate.sandbox import Sandbox

    console.print(f"[bold]Starting the embedded Scalix sandbox[/] in {workdir}")
    with Sandbox(workdir / "sandbox") as sandbox:
        # Calendars and contacts go to an embedded CalDAV/CardDAV server (Radicale).
        dav, dav_password = start_dav(workdir / "dav", sandbox.directory())
        stack.callback(dav.stop)
        console.print(f"CalDAV/CardDAV server (Radicale): {dav.url}")
        data = sandbox.config_data(
            {
                "type": "maildir",
                "path": str(workdir / "maildir" / "{email}"),
                # A file: reference, like the sandbox's own secrets: no password in Prefect.
                **groupware_destination(dav, sandbox.write_secret("dav_password", dav_password)),
            },
            tenant="sandbox",
        )
        data["options"].update(
            {
                "staging_dir": str(workdir / "staging"),
                "reports_dir": str(workdir / "reports"),
                "state": {"dir": str(workdir / "state")},
            }
        )
        # restart-service too: stop webmail and the user-facing services, restart, let back in.
        data["service"] = {"restart": True, "lockout": "services", "healthy_timeout_s": 60}
        config_path = workdir / "sandbox.yaml"
        config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        config_path.chmod(0o600)
        cfg = load_config(config_path)
        console.print(f"tenant config: {config_path}")

        state = run_flow(cfg)
        console.print(f"\nflow run: [bold]{state.name}[/] {state.message or ''}")
        preflight = preflight_report(cfg, state)
        fixed = apply_remedies(cfg, sandbox, console, preflight) if preflight is not None else []
        if fixed:
            console.print(f"\n[bold]Rerunning only the users fixed:[/] {', '.join(fixed)}")
            state = run_flow(cfg, users=fixed)
            console.print(f"\nflow run: [bold]{state.name}[/] {state.message or ''}")
        checks, not_migrated = compare(cfg)
        gw_checks = groupware_checks(cfg)
    _print_checks(console, checks)
    print_groupware(console, gw_checks)
    for user, status, reason in not_migrated:
        console.print(f"not migrated: {user} ({status}) {reason}", markup=False)
    report = cfg.options.reports_dir.resolve() / "report.html"
    console.print(f"\nreport: {report}")
    console.print(f"maildir: {(workdir / 'maildir').resolve()}")
    bad = [c for c in checks if not c.ok]
    if bad or not checks:
        console.print(f"[red]{len(bad)} folder(s) differ[/]")
        return 1
    bad_gw = [c.user for c in gw_checks if not c.ok]
    if bad_gw or not gw_checks:
        console.print(f"[red]calendars/contacts differ for: {', '.join(bad_gw) or 'everyone'}[/]")
        return 1
    console.print(f"[green]all {len(checks)} folders match: messages and bytes[/]")
    console.print(
        f"[green]calendars and address books of {len(gw_checks)} users: every resource "
        "created once and verified[/]"
    )
    return 0


def apply_remedies(
    cfg: TenantConfig, sandbox: Sandbox, console: Console, report: PreflightReport
) -> list[str]:
    """Do what ``report`` told the operator for each user it left out; return their new keys.

    On a real system these are SAC and Outlook actions; here they change the sandbox.
    """
    users = {u.key: u for u in discover_users(cfg).users}
    fixed: list[str] = []
    for key, f in report.left_out.items():
        user = users.get(key)
        if user is None:
            continue
        console.print(f"preflight {f.code}: {f.message}\n  remedy: {f.remedy}", markup=False)
        if f.code == "PF-USR-001" and user.auth_id:
            auth_id = user.auth_id

            def to_top(d: Directory, name: str = user.display_name, top: str = auth_id) -> None:
                for u in d.users:
                    if u.display_name == name:
                        u.addresses.sort(key=lambda a: a.lower() != top.lower())

            sandbox.update_directory(to_top)
            fixed.append(auth_id.lower())
        elif f.code == "PF-USR-005":
            with UserContext.of(cfg, user).open_source() as mailbox:
                for folder in mailbox.list_folders():
                    leaf = folder.name.rsplit(folder.delimiter, 1)[-1]
                    if "\\" in leaf or "/" in leaf:
                        new = leaf.replace("\\", "-").replace("/", "-")
                        mailbox.client.rename_folder(folder.raw_name, new)
                        console.print(f"  renamed {folder.name!r} to {new!r}", markup=False)
            fixed.append(user.key)
    return fixed


def compare(cfg: TenantConfig) -> tuple[list[FolderCheck], list[tuple[str, str, str]]]:
    """Per folder of each migrated user: the source over IMAP vs the destination."""
    users = {u.key: u for u in discover_users(cfg).users}
    checks: list[FolderCheck] = []
    not_migrated: list[tuple[str, str, str]] = []
    with journal_for(cfg) as journal:  # the process's journal, as the steps use it
        for row in journal.user_rows(cfg.tenant):
            user = users.get(row.user_key)
            if row.status is not UserStatus.done or user is None:
                not_migrated.append((row.user_key, row.status, row.error_message or ""))
                continue
            checks.extend(_compare_user(cfg, journal, user))
    return checks, not_migrated


def _compare_user(cfg: TenantConfig, journal: Journal, user: ScalixUser) -> list[FolderCheck]:
    skipped: dict[str, tuple[int, int]] = {}
    for e in journal.entries(cfg.tenant, user.key):
        if e.load_state.value == "skipped":
            n, b = skipped.get(e.folder, (0, 0))
            skipped[e.folder] = (n + 1, b + e.size)
    dest_names = {r.folder: r.dest_folder for r in journal.folder_rows(cfg.tenant, user.key)}
    out: list[FolderCheck] = []
    context = UserContext.of(cfg, user)
    with context.open_source() as source, context.open_destination() as dest:
        for folder in source.list_folders():
            if not folder.selectable or folder.name not in dest_names:
                continue
            _, exists = source.examine(folder)  # the server's own count (EXISTS)
            sizes = [m.size for m in source.message_info(folder, source.uids_above(folder, 0))]
            dest_name = dest_names[folder.name] or folder.name
            dest_sizes = [m.size for m in dest.messages(dest_name)]
            sk_n, sk_b = skipped.get(folder.name, (0, 0))
            out.append(
                FolderCheck(
                    user.key,
                    folder.name,
                    dest_name,
                    exists,
                    sum(sizes),
                    sk_n,
                    sk_b,
                    len(dest_sizes),
                    sum(dest_sizes),
                )
            )
    return out


def _print_checks(console: Console, checks: list[FolderCheck]) -> None:

    columns = [
        "user",
        "folder",
        "destination",
        "source msgs",
        "source bytes",
        "skipped",
        "dest msgs",
        "dest bytes",
        "match",
    ]
    rows = [
        dict(
            zip(
                columns,
                [
                    c.user,
                    c.folder,
                    c.dest_folder,
                    c.source_messages,
                    c.source_bytes,
                    c.skipped,
                    c.dest_messages,
                    c.dest_bytes,
                    "yes" if c.ok else "NO",
                ],
                strict=True,
            )
        )
        for c in checks
    ]
    print_table(
        console,
        "source (Scalix sandbox, IMAP) vs destination (Maildir)",
        columns,
        rows,
        styles={"match": {"yes": "green", "NO": "red"}},
    )
