"""Reports: journal records -> pandas DataFrames -> files (CSV, Markdown, HTML).

pandas lives only here, at the edge. Everything is rebuilt from the journal, so
``scalix-migrate report FILE`` gives the same files as the end of a run.

The users table's message columns, per user (old-UIDVALIDITY twins not counted):
``found`` every message seen on the source; ``staged`` those whose bytes reached the staging
store; ``loaded`` those at the destination; ``to_load`` staged and not yet at the
destination; ``skipped`` left out on purpose (``\\Deleted``, date or size filters);
``failed`` item errors. ``error_code`` is the user's error, or for an ``excluded`` user the
preflight finding that left it out (the remedy is in ``error``).
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markdown_it import MarkdownIt

from scalix_migrate.errors import CATALOGUE
from scalix_migrate.preflight import PreflightReport
from scalix_migrate.private import private_dir, write_private
from scalix_migrate.records import ItemClass, LoadState
from scalix_migrate.state import Journal, UserStatus

if TYPE_CHECKING:
    import pandas as pd

USER_COLUMNS = [
    "user",
    "display_name",
    "status",
    "folders",
    "found",
    "staged",
    "loaded",
    "to_load",
    "skipped",
    "failed",
    "bytes",
    "appointments",
    "contacts",
    "tasks",
    "duration_s",
    "msg_per_s",
    "retries",
    "reconnects",
    "error_code",
    "error",
]


@dataclass(frozen=True)
class ReportFiles:
    directory: Path
    users_csv: Path
    failures_csv: Path
    summary_md: Path
    report_html: Path
    commands_csv: Path
    summary: str  # the Markdown of summary.md
    users: list[dict[str, Any]]  # the users table as records (see records_of)


@dataclass
class _UserCounts:
    """One user's ledger tallies, summed (old-UIDVALIDITY twins left out)."""

    by_state: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    found: int = 0
    in_stage: int = 0
    loaded_bytes: int = 0


def _counts_by_user(journal: Journal, tenant: str) -> dict[str, _UserCounts]:
    """The journal's per-user tallies in one pass each: linear in users (a filter of the
    tallies per user cost about 0.2 s a user, profiled on 30 users; 5,000 users are the
    design case)."""
    counts: defaultdict[str, _UserCounts] = defaultdict(_UserCounts)
    for t in journal.message_tallies(tenant):
        if t.load_state is LoadState.superseded:
            continue
        mine = counts[t.user_key]
        mine.by_state[t.load_state.value] += t.count
        mine.found += t.count
        if t.stored:
            mine.in_stage += t.count
        if t.load_state is LoadState.loaded:
            mine.loaded_bytes += t.bytes
    for k in journal.item_class_tallies(tenant):
        counts[k.user_key].by_kind[k.item_class.value] += k.count
    return counts


def users_frame(journal: Journal, tenant: str) -> pd.DataFrame:
    """One row per user with counts, bytes, duration and throughput (see the module doc)."""
    import pandas as pd  # here, not at the top: only reports need it (~45 MB)

    counts = _counts_by_user(journal, tenant)
    folders = journal.folder_counts(tenant)
    rows: list[dict[str, Any]] = []
    for u in journal.user_rows(tenant):
        mine = counts.get(u.user_key) or _UserCounts()
        by_state, by_kind = mine.by_state, mine.by_kind
        start = u.extract_started or u.load_started
        end = u.load_finished or u.extract_finished
        duration = (end - start).total_seconds() if start and end and end >= start else None
        loaded = by_state[LoadState.loaded.value]
        rows.append(
            {
                "user": u.user_key,
                "display_name": u.display_name or "",
                "status": u.status.value,
                "folders": folders.get(u.user_key, 0),
                "found": mine.found,
                "staged": mine.in_stage,
                "loaded": loaded,
                "to_load": by_state[LoadState.staged.value] + by_state[LoadState.appending.value],
                "skipped": by_state[LoadState.skipped.value],
                "failed": by_state[LoadState.failed.value],
                "bytes": mine.loaded_bytes,
                "appointments": by_kind[ItemClass.appointment.value],
                "contacts": by_kind[ItemClass.contact.value],
                "tasks": by_kind[ItemClass.task.value],
                "duration_s": round(duration, 1) if duration is not None else None,
                "msg_per_s": round(loaded / duration, 1) if duration and loaded else None,
                "retries": u.retries,
                "reconnects": u.reconnects,
                "error_code": u.error_code or "",
                "error": u.error_message or "",
            }
        )
    return _with_groupware(pd.DataFrame(rows, columns=USER_COLUMNS), journal, tenant)


GROUPWARE_KINDS = {"events": ("event",), "tasks": ("task",), "contacts": ("contact", "group")}


def _with_groupware(frame: pd.DataFrame, journal: Journal, tenant: str) -> pd.DataFrame:
    """Per kind, the calendar/address-book resources found, created and verified (columns
    added only when the tenant migrates groupware: destination.calendar/contacts)."""
    counts: dict[str, Counter[str]] = journal.groupware_counts(tenant)
    if not counts:
        return frame
    for label, kinds in GROUPWARE_KINDS.items():
        for what, states in (
            ("found", None),
            ("created", ("stored", "verified")),
            ("verified", ("verified",)),
        ):
            frame[f"{label}_{what}"] = [
                sum(
                    n
                    for key, n in counts.get(user, Counter()).items()
                    if key.split("-", 1)[0] in kinds
                    and (states is None or key.split("-", 1)[1] in states)
                )
                for user in frame["user"]
            ]
    frame["groupware_failed"] = [
        sum(n for key, n in counts.get(user, Counter()).items() if key.endswith("-failed"))
        for user in frame["user"]
    ]
    frame["message_only"] = [
        counts.get(user, Counter()).get("item-message-only", 0) for user in frame["user"]
    ]
    return frame


def failures_frame(journal: Journal, tenant: str) -> pd.DataFrame:
    """Per-message item errors: ``failed`` rows and ``skipped`` rows with an error code.

    The ``state`` column says which (an over-size message is ``skipped`` with SXM-IMAP-006:
    listed, so it is never dropped silently).
    """
    import pandas as pd  # here, not at the top: only reports need it (~45 MB)

    cols = [
        "user_key",
        "folder",
        "uidvalidity",
        "uid",
        "state",
        "size",
        "message_id",
        "error_code",
        "error_detail",
    ]
    rows = [{**asdict(r), "state": LoadState.failed.value} for r in journal.item_errors(tenant)]
    rows += [
        {**asdict(r), "state": LoadState.skipped.value} for r in journal.skipped_with_reason(tenant)
    ]
    # Calendar/contact resources (or items) that did not arrive: named by folder and resource.
    rows += [
        {
            "user_key": user_key,
            "folder": row.folder,
            "uidvalidity": 0,
            "uid": 0,
            "state": f"{row.book}-failed",
            "size": None,
            "message_id": row.name,
            "error_code": row.error_code,
            "error_detail": row.error_detail,
        }
        for user_key, row in journal.groupware_failures(tenant)
    ]
    rows.sort(key=lambda r: (r["user_key"], r["folder"], r["uidvalidity"], r["uid"]))
    return pd.DataFrame(rows, columns=cols)


def summary_markdown(tenant: str, users: pd.DataFrame, failures: pd.DataFrame) -> str:
    """Totals and the most frequent errors, for the run's Markdown artifact and summary.md."""
    total = len(users)
    by_status = Counter(users["status"]) if total else Counter()
    lines = [
        f"# Migration summary: {tenant}",
        "",
        f"- users: {total} ({', '.join(f'{k}: {v}' for k, v in sorted(by_status.items()))})",
        f"- messages found: {int(users['found'].sum()) if total else 0}, "
        f"loaded: {int(users['loaded'].sum()) if total else 0}, "
        f"skipped: {int(users['skipped'].sum()) if total else 0}, "
        f"failed: {int(users['failed'].sum()) if total else 0}",
        f"- bytes loaded: {int(users['bytes'].sum()) if total else 0:,}",
    ]
    if total and "events_found" in users:
        lines.append(
            "- calendars and address books (found / created / verified): "
            + ", ".join(
                f"{label} {int(users[f'{label}_found'].sum())} / "
                f"{int(users[f'{label}_created'].sum())} / "
                f"{int(users[f'{label}_verified'].sum())}"
                for label in GROUPWARE_KINDS
            )
        )
    codes = Counter(c for c in users["error_code"] if c) if total else Counter()
    codes.update(c for c in failures["error_code"] if c)
    if codes:
        lines += [
            "",
            "## Most frequent errors",
            "",
            "| code | count | what | fix |",
            "|---|---|---|---|",
        ]
        for code, n in codes.most_common(10):
            entry = CATALOGUE.get(code)
            what, fix = (entry.title, entry.remedy) if entry else ("", "")
            lines.append(f"| {code} | {n} | {what} | {fix} |")
    excluded = users[users["status"] == UserStatus.excluded] if total else users.iloc[0:0]
    if len(excluded):
        lines += ["", "## Left out by preflight", ""]
        lines += [
            f"- {r.user}: {r.error_code} {r.error}".rstrip()
            for r in excluded.itertuples(index=False)
        ]
        lines += ["", "Rerun them with `only_failed: true` once the remedy is applied."]
    failed_users = users.loc[users["status"] == UserStatus.failed, "user"].tolist() if total else []
    if failed_users:
        lines += [
            "",
            "## Failed users",
            "",
            *[f"- {u}" for u in failed_users],
            "",
            "Rerun them with `only_failed: true` once the cause is fixed.",
        ]
    return "\n".join(lines) + "\n"


def _markdown_html(text: str) -> str:
    """Markdown as HTML; raw HTML in it is escaped (folder names, messages come from servers)."""

    return str(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))


# Rows per users table of report.html. A Styler holds a dict per cell while it renders
# (~20 KB per user: 99 MB for 5,000 users in one table, measured with tracemalloc), so a
# large tenant's users are rendered table by table and the report's memory stays that of
# one table, whatever the number of users.
USERS_PER_TABLE = 500
BAR_COLUMNS = (("bytes", "#8ecae6"), ("msg_per_s", "#ffb703"))


def _users_tables(users: pd.DataFrame) -> Iterator[str]:
    """The users as HTML tables of at most USERS_PER_TABLE rows, one after another, each
    with its bars scaled to the whole column (a bar means the same in every table)."""
    import pandas as pd

    scales: list[tuple[str, str, float, float]] = []
    for column, colour in BAR_COLUMNS:
        values = pd.to_numeric(users[column], errors="coerce").dropna()
        # Styler.bar divides by the column's range: skip a column with nothing to compare.
        if len(values) and values.max() > values.min():
            scales.append((column, colour, float(values.min()), float(values.max())))
    total = len(users)
    for start in range(0, max(total, 1), USERS_PER_TABLE):
        part = users.iloc[start : start + USERS_PER_TABLE]
        styled = part.style.format(na_rep="", precision=1).hide(axis="index")
        for column, colour, low, high in scales:
            styled = styled.bar(subset=[column], color=colour, vmin=low, vmax=high)
        if total > USERS_PER_TABLE:
            styled = styled.set_caption(f"users {start + 1}-{start + len(part)} of {total}")
        yield styled.to_html()


def _html(
    tenant: str,
    users: pd.DataFrame,
    failures: pd.DataFrame,
    summary: str,
    preflight: list[dict[str, Any]] | None = None,
) -> str:
    import pandas as pd  # here, not at the top: only reports need it (~45 MB)

    fail_html = (
        failures.to_html(index=False, border=0) if len(failures) else "<p>No item errors.</p>"
    )
    # The summary without its title (the page has its own), as real lists and tables.
    summary_html = _markdown_html(summary.split("\n", 1)[1] if "\n" in summary else "")
    history = preflight or []
    latest_html = _markdown_html(preflight_markdown(history).split("\n", 1)[1])
    history_html = (
        pd.DataFrame(history, columns=PREFLIGHT_COLUMNS).to_html(index=False, border=0)
        if history
        else "<p>No preflight has run yet.</p>"
    )
    title = html.escape(tenant)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>scalix-migrate: {title}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}}</style></head>
<body><h1>Migration report: {title}</h1>{summary_html}
<h2>Users (bars: volume loaded and throughput)</h2>{"".join(_users_tables(users))}
<h2>Item errors</h2>{fail_html}
<h2>Preflight: the latest run</h2>{latest_html}
<h2>Preflight: every run's findings</h2>{history_html}</body></html>
"""


def write_reports(journal: Journal, tenant: str, directory: Path) -> ReportFiles:
    """Write users.csv, failures.csv, commands.csv, summary.md and report.html (0600)."""
    import pandas as pd  # here, not at the top: only reports need it (~45 MB)

    private_dir(directory)
    users = users_frame(journal, tenant)
    failures = failures_frame(journal, tenant)
    summary = summary_markdown(tenant, users, failures)
    files = ReportFiles(
        directory,
        directory / "users.csv",
        directory / "failures.csv",
        directory / "summary.md",
        directory / "report.html",
        directory / "commands.csv",
        summary,
        records_of(users),
    )
    write_private(files.users_csv, users.to_csv(index=False))
    write_private(files.failures_csv, failures.to_csv(index=False))
    commands = pd.DataFrame(
        [asdict(c) for c in journal.commands(tenant)],
        columns=["id", "tenant", "at", "host", "command", "exit_status", "duration_s"],
    )
    write_private(files.commands_csv, commands.to_csv(index=False))
    write_private(files.summary_md, summary)
    history = journal.preflight_history(tenant)
    write_private(files.report_html, _html(tenant, users, failures, summary, history))
    return files


def users_table(journal: Journal, tenant: str) -> list[dict[str, Any]]:
    """The users table as plain records (for the CLI)."""
    return records_of(users_frame(journal, tenant))


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts, missing values as "" (Prefect table artifacts, the CLI)."""
    import pandas as pd  # here, not at the top: only reports need it (~45 MB)

    return [
        {
            k: ("" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
            for k, v in row.items()
        }
        for row in frame.to_dict(orient="records")
    ]


PREFLIGHT_COLUMNS = [
    "run_id",
    "run_name",
    "at",
    "severity",
    "code",
    "user",
    "message",
    "remedy",
    "accepted",
]


def latest_run(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest run's findings out of :meth:`Journal.preflight_history` (newest first)."""
    if not history:
        return []
    run = history[0]["run_id"]
    return [r for r in history if r["run_id"] == run]


def preflight_markdown(history: list[dict[str, Any]]) -> str:
    """The latest run's findings as a table, then one line per earlier run."""
    latest = latest_run(history)
    lines = ["# Preflight findings", ""]
    findings = [r for r in latest if r["code"]]
    if not latest:
        return "\n".join([*lines, "No preflight has run yet."]) + "\n"
    head = latest[0]
    lines.append(f"Run {head['run_name'] or head['run_id']} at {_when(head['at'])}.")
    lines.append("")
    if not findings:
        lines.append("No findings: every check passed.")
    else:
        counts = Counter(r["severity"] for r in findings)
        accepted = sum(1 for r in findings if r["accepted"])
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        lines.append(summary + (f" ({accepted} accepted by preflight.accept)" if accepted else ""))
        cols = ["severity", "code", "user", "message", "remedy", "accepted"]
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in findings:
            cells = [str(r[c]).replace("|", "\\|") for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
    earlier = _runs(history)[1:]
    if earlier:
        lines += ["", "## Earlier runs", ""]
        lines += [f"- {line}" for line in earlier]
    return "\n".join(lines) + "\n"


def preflight_run_markdown(report: PreflightReport, *, run: str, at: datetime) -> str:
    """One run's findings as :func:`preflight_markdown` shows the latest run, built from the
    run's own report (not from the history, where another run may be newer)."""
    rows = report.to_rows() or [
        {"severity": "", "code": "", "user": "", "message": "", "remedy": "", "accepted": ""}
    ]
    return preflight_markdown([{**r, "run_id": run, "run_name": run, "at": at} for r in rows])


def _when(at: Any) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(at, "strftime") else str(at)


def _runs(history: list[dict[str, Any]]) -> list[str]:
    """One line per run: when, which run, and its findings by severity."""
    out: list[str] = []
    seen: dict[str, list[dict[str, Any]]] = {}
    for r in history:
        seen.setdefault(r["run_id"], []).append(r)
    for run, rows in seen.items():
        counts = Counter(r["severity"] for r in rows if r["code"])
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no findings"
        out.append(f"{_when(rows[0]['at'])} {rows[0]['run_name'] or run}: {shown}")
    return out


def write_preflight_files(history: list[dict[str, Any]], directory: Path) -> list[Path]:
    """preflight.csv (every run's findings, newest first) and preflight.md (the latest run).

    With the csv module, not pandas: preflight writes these in the flow's process before any
    user moves, and importing pandas there would hold ~45 MB through the whole run."""
    private_dir(directory)
    csv_path, md_path = directory / "preflight.csv", directory / "preflight.md"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PREFLIGHT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    write_private(csv_path, out.getvalue())
    write_private(md_path, preflight_markdown(history))
    return [csv_path, md_path]
