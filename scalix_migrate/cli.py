"""``scalix-migrate`` command line.

Exit codes: 0 success; 1 the migration (or preflight) found failures; 2 the config or the
command line is wrong. The commands that run the procedure go through the Prefect flow, so a
CLI run looks in the Prefect UI like a deployment run (when ``PREFECT_API_URL`` points at a
server; otherwise Prefect starts a temporary local one).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from scalix_migrate import deploy as deployer
from scalix_migrate.codes import PREFLIGHT_CODES
from scalix_migrate.config import (
    INLINE_REFUSED_BY_PREFECT,
    Phase,
    TenantConfig,
    inline_secret_problems,
    load_config,
)
from scalix_migrate.demo import run_demo
from scalix_migrate.discovery import discover_users
from scalix_migrate.errors import ERROR_CODES, ConfigError, MigrationError
from scalix_migrate.flowrun import prepare_prefect, run_flow
from scalix_migrate.prefect_api import prefect_api_problem
from scalix_migrate.report import users_table, write_preflight_files, write_reports
from scalix_migrate.state import UserStatus
from scalix_migrate.steps import journal_for, let_users_in_step, preflight_step
from scalix_migrate.tables import print_table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Migrate a Scalix mail system, user by user, with Prefect.",
)
console = Console()
err = Console(stderr=True)
# On a pipe or in a file, lines stay whole (rich would break them at 80 columns).
console.soft_wrap = not console.is_terminal
err.soft_wrap = not err.is_terminal

ConfigFile = Annotated[Path, typer.Argument(help="tenant YAML config")]


def _config(path: Path) -> TenantConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)  # plain: one problem per line, never wrapped
        raise typer.Exit(2) from None


def require_prefect_api() -> None:
    """Exit 2 with one line when PREFECT_API_URL names a Prefect API that does not answer."""
    prepare_prefect()
    problem = prefect_api_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        raise typer.Exit(2)


def _fail(exc: MigrationError) -> typer.Exit:
    print(exc.describe(), file=sys.stderr)
    return typer.Exit(2 if isinstance(exc, ConfigError) else 1)


def _print_rows(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    print_table(console, title, columns, rows)


@app.command()
def validate(file: ConfigFile) -> None:
    """Check a tenant config without contacting any server."""
    cfg = _config(file)
    console.print(
        f"{file}: OK (tenant {cfg.tenant}, {len(cfg.source.server_names)} server "
        f"name(s), destination {cfg.destination.type})"
    )


@app.command()
def run(
    file: ConfigFile,
    user: Annotated[
        list[str] | None, typer.Option("--user", "-u", help="only these users (repeatable)")
    ] = None,
    only_failed: Annotated[
        bool, typer.Option(help="rerun the users not done: failed, excluded or paused")
    ] = False,
    phase: Annotated[Phase, typer.Option(help="full, or delta (only what is new)")] = Phase.full,
    dry_run: Annotated[bool, typer.Option(help="discover and check; move nothing")] = False,
) -> None:
    """Run the migration flow for one tenant."""
    cfg = _config(file)
    inline = inline_secret_problems(file, cfg, why=INLINE_REFUSED_BY_PREFECT)
    if inline:
        print("\n".join(inline), file=sys.stderr)
        raise typer.Exit(2)
    require_prefect_api()
    with _progress(cfg):
        state = run_flow(
            cfg, users=user or None, only_failed=only_failed, phase=phase, dry_run=dry_run
        )
    console.print(f"{state.name}: {state.message or ''}", markup=False)
    console.print(f"reports: {cfg.options.reports_dir.resolve()}")
    raise typer.Exit(0 if state.is_completed() else 1)


@contextlib.contextmanager
def _progress(cfg: TenantConfig) -> Iterator[None]:
    """On a terminal, a live line from the journal: users finished and messages loaded."""
    if not console.is_terminal:
        yield
        return
    finals = (UserStatus.done, UserStatus.failed, UserStatus.paused)
    stop = threading.Event()
    started = datetime.now(UTC)

    def watch(progress: Progress, task: TaskID) -> None:
        with journal_for(cfg) as journal:
            while not stop.wait(1.0):
                rows = [
                    r
                    for r in journal.user_rows(cfg.tenant)
                    if r.extract_started and r.extract_started >= started
                ]
                finished = [r for r in rows if r.status in finals]
                failed = sum(r.status is UserStatus.failed for r in rows)
                loaded = journal.counts_by_state(cfg.tenant).get("loaded", 0)
                progress.update(
                    task,
                    total=max(len(rows), 1),
                    completed=len(finished),
                    description=f"users finished (failed: {failed}); "
                    f"messages at the destination: {loaded}",
                )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=None)
        watcher = threading.Thread(target=watch, args=(progress, task), daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join(timeout=5)


@app.command()
def preflight(file: ConfigFile) -> None:
    """Discover users and run every preflight check; writes preflight.csv and preflight.md."""
    cfg = _config(file)
    try:
        report = preflight_step(cfg, discover_users(cfg), run_name="preflight (command line)")
    except MigrationError as exc:
        raise _fail(exc) from None
    _print_rows(
        f"preflight: {cfg.tenant}",
        report.to_rows(),
        ["severity", "code", "user", "message", "remedy", "accepted"],
    )
    reports = cfg.options.reports_dir
    console.print(f"written: {reports / 'preflight.csv'}, {reports / 'preflight.md'}")
    raise typer.Exit(1 if report.blocking else 0)


@app.command()
def report(file: ConfigFile) -> None:
    """Rebuild the report files (preflight history included) from the journal."""
    cfg = _config(file)
    with journal_for(cfg) as journal:
        files = write_reports(journal, cfg.tenant, cfg.options.reports_dir)
        write_preflight_files(journal.preflight_history(cfg.tenant), cfg.options.reports_dir)
    console.print(f"report: {files.report_html}")


@app.command()
def status(file: ConfigFile) -> None:
    """Print the per-user table from the journal."""
    cfg = _config(file)
    with journal_for(cfg) as journal:
        rows = users_table(journal, cfg.tenant)
    _print_rows(
        f"users: {cfg.tenant}",
        rows,
        [
            "user",
            "status",
            "folders",
            "found",
            "loaded",
            "skipped",
            "failed",
            "bytes",
            "error_code",
        ],
    )


@app.command()
def unlock(file: ConfigFile) -> None:
    """Undo what restart-service changed (after a crash of the whole process). Idempotent."""
    cfg = _config(file)
    try:
        done = let_users_in_step(cfg)
    except MigrationError as exc:
        raise _fail(exc) from None
    console.print("\n".join(done) if done else "nothing to undo")


@app.command()
def deploy(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="tenant YAML files to deploy (default: every file in --configs)"),
    ] = None,
    configs: Annotated[Path, typer.Option(help="directory of tenant YAML files")] = Path(
        "configs/tenants"
    ),
    write_prefect_yaml: Annotated[
        Path | None, typer.Option(help="only write this prefect.yaml; deploy nothing")
    ] = None,
) -> None:
    """Create or update one Prefect deployment per tenant config (needs PREFECT_API_URL).

    Only the files named, or those in configs/tenants/: the examples in configs/examples/
    are never deployed.
    """
    try:
        found = deployer.load_tenants(files) if files else deployer.tenant_configs(configs)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        raise typer.Exit(2) from None
    if not found:
        print(
            f"{configs}: no tenant *.yaml files (copy configs/examples/acme.yaml there, or "
            "run `scalix-migrate sandbox`)",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    if write_prefect_yaml is not None:
        write_prefect_yaml.write_text(deployer.prefect_yaml([c for _, c in found]), "utf-8")
        console.print(f"written: {write_prefect_yaml} ({len(found)} deployment(s))")
        return
    require_prefect_api()
    for path, cfg in found:
        name = deployer.deploy(cfg)
        console.print(f"deployed {name} from {path} (work pool {cfg.deployment.work_pool})")


def codes_markdown() -> str:
    """Every error and preflight code with its remedy, one line each (docs/codes.md)."""
    lines = [
        "# Codes",
        "",
        "Generated by `scalix-migrate codes --markdown`; every error and finding names one.",
        "",
        "## Errors",
        "",
        "| code | what | fix |",
        "|---|---|---|",
        *[f"| {c.code} | {c.title} | {c.remedy} |" for c in ERROR_CODES.values()],
        "",
        "## Preflight findings",
        "",
        "| code | severity | what | fix |",
        "|---|---|---|---|",
        *[
            f"| {c.code} | {c.severity.value} | {c.title} | {c.remedy} |"
            for c in PREFLIGHT_CODES.values()
        ],
    ]
    return "\n".join(lines) + "\n"


@app.command()
def codes(
    markdown: Annotated[bool, typer.Option(help="print docs/codes.md")] = False,
) -> None:
    """List every error and preflight code with its remedy."""
    if markdown:
        sys.stdout.write(codes_markdown())
        return
    for c in ERROR_CODES.values():
        print(f"{c.code}  {c.title}: {c.remedy}")
    for p in PREFLIGHT_CODES.values():
        print(f"{p.code}  [{p.severity.value}] {p.title}: {p.remedy}")


@app.command()
def sandbox(
    write_config: Annotated[Path, typer.Option(help="tenant YAML to write for the sandbox")] = Path(
        "configs/tenants/sandbox.yaml"
    ),
    workdir: Annotated[Path, typer.Option(help="sandbox data, staging, journal, reports")] = Path(
        "sandbox-run"
    ),
) -> None:
    """Serve the embedded Scalix sandbox until Ctrl-C, with a tenant config pointing at it.

    For trying the Prefect deployment on a machine without Scalix: the config migrates the
    sandbox into a Maildir under WORKDIR.
    """
    # The sandbox (pymap, a Scalix stand-in) is loaded only by the commands that serve it.
    from scalix_migrate.sandbox import Sandbox

    workdir = workdir.resolve()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Sandbox(workdir / "sandbox") as sb:
        data = sb.config_data(
            {"type": "maildir", "path": str(workdir / "maildir" / "{email}")}, tenant="sandbox"
        )
        data["options"].update(
            {
                "staging_dir": str(workdir / "staging"),
                "reports_dir": str(workdir / "reports"),
                "state": {"dir": str(workdir / "state")},
            }
        )
        write_config.parent.mkdir(parents=True, exist_ok=True)
        write_config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        write_config.chmod(0o600)
        console.print(f"sandbox: IMAP 127.0.0.1:{sb.imap_port}, SSH 127.0.0.1:{sb.ssh_port}")
        console.print(f"tenant config: {write_config} (Ctrl-C stops the sandbox)")
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where the demo writes everything")] = Path(
        "demo-run"
    ),
) -> None:
    """Migrate the embedded sandbox tenant into a local Maildir and check every folder."""
    require_prefect_api()
    sys.exit(run_demo(workdir.resolve(), console))


if __name__ == "__main__":
    app()
