"""The preflight report as the flow reads it: who is left out, who runs, what is recorded."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

from scalix_migrate import steps
from scalix_migrate.config import parse_config
from scalix_migrate.preflight import PreflightReport, accept_findings, finding
from scalix_migrate.records import ScalixUser
from scalix_migrate.report import preflight_run_markdown

KIM = ScalixUser(display_name="Kim Lee", mailnode="sales", addresses=("Kim@acme.test",))
ALI = ScalixUser(display_name="Ali Demir", mailnode="sales", addresses=("ali@acme.test",))
NOAH = ScalixUser(display_name="Noah Berg", mailnode="sales", addresses=("noah@acme.test",))


def _report() -> PreflightReport:
    by_name = finding("PF-USR-005", "folder 'a\\b' contains '\\'", user="KIM LEE/Sales")
    return PreflightReport(
        findings=[
            finding("PF-TLS-001", "source.imap.tls is none"),
            by_name,  # the user named by its Scalix name, in another case
            finding("PF-USR-002", "a second finding for Kim", user="kim@acme.test"),
            finding("PF-USR-001", "M0022", user="ali@acme.test"),
            finding("PF-DST-001", "accepted: blocks nothing", user=None),
            finding("PF-USR-006", "accepted: leaves no one out", user="noah@acme.test"),
        ],
        users=[KIM, ALI, NOAH],
    )


def _accepted(report: PreflightReport) -> PreflightReport:
    report.findings = accept_findings(report.findings, ["PF-DST-001", "PF-USR-006:noah@acme.test"])
    return report


def test_left_out_names_each_user_by_key_with_its_first_counting_finding() -> None:
    report = _accepted(_report())

    assert report.blocking == []
    left_out = report.left_out
    assert list(left_out) == ["kim@acme.test", "ali@acme.test"]
    assert left_out["kim@acme.test"].code == "PF-USR-005"
    assert left_out["ali@acme.test"].code == "PF-USR-001"
    assert report.eligible_users == [NOAH]


def test_the_report_survives_prefects_pickling() -> None:
    report = _accepted(_report())

    again = pickle.loads(pickle.dumps(report))  # noqa: S301  # our own bytes

    assert again == report
    assert again.eligible_users == [NOAH]


def test_record_exclusions_marks_the_users_left_out_and_keeps_done_ones(tmp_path: Path) -> None:
    cfg = parse_config(
        "tenant: acme\n"
        "source:\n"
        "  server: scalix.acme.test\n"
        "  server_names: [sales]\n"
        "  admin_user: sxadmin\n"
        "  admin_password: ${X}\n"
        "  test_user: kim@acme.test\n"
        f"destination:\n  type: maildir\n  path: '{tmp_path}/m/{{email}}'\n"
        f"options:\n  state:\n    dir: '{tmp_path}/state'\n"
    )
    with steps.journal_for(cfg) as journal:
        journal.upsert_users(cfg.tenant, [KIM, ALI, NOAH])
        journal.set_user_status(cfg.tenant, ALI.key, "done")

    exclusions = steps.record_exclusions(cfg, _accepted(_report()))

    assert exclusions.keys == ["ali@acme.test", "kim@acme.test"]
    assert exclusions.already_done == ("ali@acme.test",)
    with steps.journal_for(cfg) as journal:
        rows = {r.user_key: r for r in journal.user_rows(cfg.tenant)}
    assert rows["kim@acme.test"].status == "excluded"
    assert rows["kim@acme.test"].error_code == "PF-USR-005"
    assert "remedy: Rename the folder" in (rows["kim@acme.test"].error_message or "")
    assert rows["ali@acme.test"].status == "done"
    assert rows["noah@acme.test"].status != "excluded"
    assert steps.record_exclusions(cfg, PreflightReport(users=[NOAH])).findings == {}


def test_the_run_markdown_shows_the_reports_findings() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    text = preflight_run_markdown(_accepted(_report()), run="migrate-acme-full", at=at)

    assert text.startswith("# Preflight findings\n")
    assert "Run migrate-acme-full at 2026-01-02 03:04:05 UTC." in text
    assert "| exclude-user | PF-USR-001 | ali@acme.test | M0022 |" in text
    assert "accepted by preflight.accept" in text
    empty = preflight_run_markdown(PreflightReport(), run="r", at=at)
    assert "No findings: every check passed." in empty
