"""Reports built from a journal: the item-error list (failures.csv) and its summary."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from scalix_migrate.records import LedgerEntry, LoadState, ScalixUser, SourceFolder
from scalix_migrate.report import failures_frame, write_reports
from scalix_migrate.state import Journal, UserStatus

KIM = ScalixUser(display_name="Kim Lee", mailnode="sales", addresses=("kim@example.test",))
# A second user with loaded mail: report.html's bars need a range of values to scale.
ALI = ScalixUser(display_name="Ali Demir", mailnode="sales", addresses=("ali@example.test",))
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def row(uid: int, state: LoadState, sha: str | None = None) -> LedgerEntry:
    return LedgerEntry(
        folder="INBOX",
        uidvalidity=7,
        uid=uid,
        sha256=sha or f"unfetched-7-{uid}",
        size=100 * uid,
        internaldate=T0,
        flags=frozenset(),
        message_id=None,
        load_state=state,
    )


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """Kim's INBOX: staged, failed (not returned), over-size, date-filtered and \\Deleted."""
    with Journal.open(directory=tmp_path / "state") as j:
        j.upsert_users("acme", [KIM])
        inbox = SourceFolder(name="INBOX", raw_name="INBOX", delimiter="/", attributes=frozenset())
        cursor = j.open_folder("acme", KIM.key, inbox, 7)
        entries = [
            row(1, LoadState.staged, "a" * 64),
            row(2, LoadState.failed),
            row(3, LoadState.skipped),  # over-size
            row(4, LoadState.skipped),  # outside since/before: skipped on purpose, no code
            row(5, LoadState.skipped, "b" * 64),  # \Deleted: staged bytes, skipped, no code
        ]
        j.record_batch("acme", KIM.key, cursor, entries, 5)
        j.set_item_errors(
            "acme",
            KIM.key,
            "INBOX",
            7,
            {
                2: ("SXM-IMAP-004", "server said: NO"),
                3: ("SXM-IMAP-006", "300 bytes > max_size_bytes 200"),
                4: (None, "INTERNALDATE outside since/before"),
            },
        )
        j.upsert_users("acme", [ALI])
        cursor = j.open_folder("acme", ALI.key, inbox, 9)
        done = [
            LedgerEntry("INBOX", 9, u, c * 64, 1000 * u, T0, frozenset(), None)
            for u, c in ((1, "c"), (2, "d"))
        ]
        j.record_batch("acme", ALI.key, cursor, done, 2)
        ids = [e.id for e in j.entries("acme", ALI.key) if e.id is not None]
        j.set_load_state(ids[:1], LoadState.loaded, dest_folder="INBOX", dest_uid="1")
        j.set_user_status(
            "acme",
            ALI.key,
            UserStatus.done,
            extract_started=T0,
            load_finished=T0 + timedelta(seconds=10),
        )
        yield j


def test_failures_frame_lists_failed_and_coded_skipped_rows_with_their_state(
    journal: Journal,
) -> None:
    frame = failures_frame(journal, "acme")
    assert list(frame.columns) == [
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
    got = [(r.uid, r.state, r.error_code, r.size) for r in frame.itertuples(index=False)]
    assert got == [(2, "failed", "SXM-IMAP-004", 200), (3, "skipped", "SXM-IMAP-006", 300)]
    assert journal.skipped_with_reason("acme")[0].error_detail == ("300 bytes > max_size_bytes 200")


def test_failures_csv_and_summary_include_over_size_messages(
    journal: Journal, tmp_path: Path
) -> None:
    files = write_reports(journal, "acme", tmp_path / "report")
    with files.failures_csv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["uid"], r["state"], r["error_code"]) for r in rows] == [
        ("2", "failed", "SXM-IMAP-004"),
        ("3", "skipped", "SXM-IMAP-006"),
    ]
    summary = files.summary_md.read_text(encoding="utf-8")
    assert "| SXM-IMAP-006 | 1 |" in summary
    assert "| SXM-IMAP-004 | 1 |" in summary
    assert "SXM-IMAP-006" in files.report_html.read_text(encoding="utf-8")


def test_failures_frame_is_empty_without_item_errors(tmp_path: Path) -> None:
    with Journal.open(directory=tmp_path / "state") as j:
        frame = failures_frame(j, "acme")
    assert frame.empty
    assert "state" in frame.columns


def test_html_report_with_equal_volumes_does_not_divide_by_zero(tmp_path: Path) -> None:
    """A run where every user moved the same bytes (e.g. extract only) still renders."""
    import warnings

    from scalix_migrate.report import USER_COLUMNS, _html

    same = pd.DataFrame([dict.fromkeys(USER_COLUMNS, 0)] * 2, columns=USER_COLUMNS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        html = _html("t", same, pd.DataFrame(), "# t\n\nsummary")
    assert "<table" in html
    assert "linear-gradient" not in html  # no bars where there is nothing to compare


def test_each_message_column_means_what_its_name_says(journal: Journal, tmp_path: Path) -> None:
    files = write_reports(journal, "acme", tmp_path / "reports")
    by_user = {r["user"]: r for r in files.users}
    ali, kim = by_user["ali@example.test"], by_user["kim@example.test"]
    # Ali: two messages staged, one of them already at the destination.
    assert (ali["found"], ali["staged"], ali["loaded"], ali["to_load"]) == (2, 2, 1, 1)
    # Kim: 1 staged and the \Deleted one had their bytes staged; the others never did.
    assert (kim["found"], kim["staged"], kim["to_load"], kim["skipped"]) == (5, 2, 1, 3)


def test_excluded_user_is_listed_with_its_code_and_remedy(journal: Journal, tmp_path: Path) -> None:
    journal.set_user_status(
        "acme",
        KIM.key,
        UserStatus.excluded,
        error_code="PF-USR-005",
        error_message="excluded by preflight: folder 'a\\b' contains '\\'; remedy: Rename it",
    )
    files = write_reports(journal, "acme", tmp_path / "reports")
    kim = next(r for r in files.users if r["user"] == KIM.key)
    assert kim["error_code"] == "PF-USR-005"
    assert "## Left out by preflight" in files.summary
    assert "- kim@example.test: PF-USR-005 excluded by preflight" in files.summary
    assert "| PF-USR-005 | 1 | folder name contains / or \\ |" in files.summary


def test_html_report_renders_markdown_and_shows_every_preflight_run(
    journal: Journal, tmp_path: Path
) -> None:
    finding = {
        "severity": "exclude-user",
        "code": "PF-USR-001",
        "user": KIM.key,
        "message": "Kim <b>is</b> exported as k@example.test",
        "remedy": "In SAC move k@example.test to the top",
        "accepted": "",
    }
    journal.record_preflight("acme", "run-1", [finding], run_name="migrate-acme-full-1", at=T0)
    journal.record_preflight(
        "acme", "run-2", [], run_name="migrate-acme-full-2", at=T0 + timedelta(days=1)
    )
    files = write_reports(journal, "acme", tmp_path / "reports")
    page = files.report_html.read_text(encoding="utf-8")
    assert "<li>users: " in page
    assert "<p>- " not in page  # no Markdown bullets shown as text
    assert "Preflight: every run" in page
    assert "migrate-acme-full-1" in page
    assert "migrate-acme-full-2" in page
    assert "PF-USR-001" in page
    assert "<b>is</b>" not in page  # server text is escaped, not markup


def test_preflight_csv_keeps_every_run(tmp_path: Path) -> None:
    from scalix_migrate.report import write_preflight_files

    with Journal.open(directory=tmp_path / "state") as j:
        j.record_preflight("acme", "r1", [], run_name="first", at=T0)
        row = {
            "severity": "warning",
            "code": "PF-SES-001",
            "user": "kim@example.test",
            "message": "IMAP session open",
            "remedy": "Ask the user to log off",
            "accepted": "",
        }
        j.record_preflight("acme", "r2", [row], run_name="second", at=T0 + timedelta(hours=1))
        write_preflight_files(j.preflight_history("acme"), tmp_path)
    rows = list(csv.DictReader((tmp_path / "preflight.csv").open()))
    assert [(r["run_id"], r["code"]) for r in rows] == [("r2", "PF-SES-001"), ("r1", "")]
    md = (tmp_path / "preflight.md").read_text(encoding="utf-8")
    assert "Run second at 2024-05-01 13:00:00 UTC" in md
    assert "## Earlier runs" in md


def test_the_flow_and_the_cli_import_pandas_only_to_build_a_report() -> None:
    """pandas costs ~45 MB of the process's memory: the flow imports it for the report at
    the end of a run, not while users move (issue 10's memory goal)."""
    import subprocess
    import sys

    probe = (
        "import sys, tasks, flows.migrate_tenant, scalix_migrate.cli, scalix_migrate.steps; "
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _many_users(n: int) -> pd.DataFrame:
    from scalix_migrate.report import USER_COLUMNS

    rows = []
    for i in range(n):
        one = dict.fromkeys(USER_COLUMNS, 0)
        one.update(user=f"u{i}@example.test", status="done", bytes=1000 * i, msg_per_s=i % 7)
        rows.append(one)
    return pd.DataFrame(rows, columns=USER_COLUMNS)


def test_html_report_renders_a_large_tenant_table_by_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Styler holds a dict per cell: 5,000 users in one table peaked at ~100 MB. Each
    table has at most USERS_PER_TABLE rows, every user is shown once, and the bars are
    scaled to the whole column, as in one table."""
    import re

    from pandas.io.formats.style import Styler

    from scalix_migrate import report

    users = _many_users(23)
    one_table = report._html("t", users, pd.DataFrame(), "# t\n\nsummary")
    rows_styled: list[int] = []
    real_init = Styler.__init__

    def counting_init(self: Styler, data: pd.DataFrame, *args: object, **kwargs: object) -> None:
        rows_styled.append(len(data))
        real_init(self, data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Styler, "__init__", counting_init)
    monkeypatch.setattr(report, "USERS_PER_TABLE", 5)
    page = report._html("t", users, pd.DataFrame(), "# t\n\nsummary")

    assert rows_styled
    assert max(rows_styled) <= 5
    assert set(rows_styled) == {5, 3}  # 23 users: four tables of 5, one of 3
    assert all(page.count(f">u{i}@example.test<") == 1 for i in range(23))
    assert "users 21-23 of 23" in page

    def bars(html: str) -> set[str]:
        # A set: one table writes a CSS rule once for all cells with the same bar.
        return set(re.findall(r"linear-gradient\([^;]*\)", html))

    assert bars(page)
    assert bars(page) == bars(one_table)
