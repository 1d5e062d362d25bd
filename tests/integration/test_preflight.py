"""preflight-validate on the bed: each check with a passing and a failing case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import UserError
from scalix_migrate.extract import extract_user
from scalix_migrate.preflight import (
    PREFLIGHT_CODES,
    Finding,
    PreflightReport,
    Severity,
    run_preflight,
)
from scalix_migrate.sandbox.directory import FolderSpec
from scalix_migrate.state import Journal
from tests.integration.scalix_bed import TenantSlice, bed, config, new_user

__all__ = ["bed"]


def codes(findings: list[Finding], user: str | None = None) -> set[str]:
    return {f.code for f in findings if user is None or f.user == user}


def dest_for(bed: TenantSlice, *, wrong: bool = False) -> dict[str, Any]:
    """The test bed's destination Dovecot (any login name, its one password)."""
    password = bed.testbed.dest_password
    return {
        "type": "imap",
        "host": "127.0.0.1",
        "port": bed.testbed.dest_imap_port,
        "tls": "none",
        "timeout_s": 20,
        "password": "wrong-" + password if wrong else password,
    }


def preflight(cfg: TenantConfig, **kw: Any) -> PreflightReport:
    """Discovery and the checks over one SSH connection (run_preflight discovers itself)."""
    return run_preflight(cfg, **kw)


def test_good_tenant_has_no_blocking_finding(bed: TenantSlice, tmp_path: Path) -> None:
    t = new_user(bed, "tester", folders=[FolderSpec("Projects"), FolderSpec("Projects/2024")])
    cfg = config(bed, tmp_path, source={"test_user": t.addresses[0]}, destination=dest_for(bed))
    report = preflight(cfg)
    assert report.blocking == [], report.to_rows()
    assert not codes(report.findings, t.addresses[0]) - {"PF-SES-001"}
    rows = report.to_rows()
    assert rows
    assert set(rows[0]) == {"code", "severity", "user", "message", "remedy", "accepted"}
    assert all(r["code"] in PREFLIGHT_CODES for r in rows)


def test_admin_without_mboxadmin_and_not_full_admin(bed: TenantSlice, tmp_path: Path) -> None:
    t = new_user(bed, "tester")
    weak = new_user(bed, "weakadmin", capabilities=[], full_admin=False)
    cfg = config(
        bed,
        tmp_path,
        source={
            "test_user": t.addresses[0],
            "admin_user": weak.auth_id,
            "admin_password": weak.password,
        },
    )
    report = preflight(cfg, check_folders=False)
    by_code = {f.code: f for f in report.findings}
    assert by_code["PF-ADM-003"].severity is Severity.blocking
    assert f"ommodu -o {weak.auth_id} -c +mboxadmin" in by_code["PF-ADM-003"].remedy
    assert "PF-ADM-002" in by_code
    assert "PF-TST-003" in by_code  # and the mboxadmin login is indeed refused


def test_test_user_given_as_alias(bed: TenantSlice, tmp_path: Path) -> None:
    t = new_user(bed, "aliased")
    alias = "alias-" + t.addresses[0]
    bed.update_directory(lambda d: d.find(t.auth_id).addresses.append(alias))  # type: ignore[union-attr]
    report = preflight(config(bed, tmp_path, source={"test_user": alias}), check_folders=False)
    found = [f for f in report.findings if f.code == "PF-TST-002"]
    assert found
    assert found[0].severity is Severity.blocking
    assert f"source.test_user: {t.addresses[0]}" in found[0].remedy


def test_primary_address_second_excludes_the_user(bed: TenantSlice, tmp_path: Path) -> None:
    t = new_user(bed, "tester")
    created = "created-as@example.test"
    m0022 = new_user(bed, "m0022", addresses=["top@example.test", created])
    bed.update_directory(lambda d: setattr(d.find(m0022.display_name), "auth_id", created))
    report = preflight(
        config(bed, tmp_path, source={"test_user": t.addresses[0]}), check_folders=False
    )
    found = [f for f in report.findings if f.code == "PF-USR-001"]
    assert [f.user for f in found if f.user == "top@example.test"] == ["top@example.test"]
    mine = next(f for f in found if f.user == "top@example.test")
    assert mine.severity is Severity.exclude_user
    assert created in mine.remedy
    assert "top@example.test" not in {u.key for u in report.eligible_users}
    assert t.addresses[0] in {u.key for u in report.eligible_users}


def test_folder_names_with_separator_or_backslash(bed: TenantSlice, tmp_path: Path) -> None:
    t = new_user(bed, "tester")
    # Outlook's "Q1/Q2 report": the stand-ins show a "/" inside a name as "\\" (seed.py).
    slash = new_user(bed, "slashy", folders=[FolderSpec("Q1\\Q2 report")])
    back = new_user(bed, "backy", folders=[FolderSpec("Archive/Budget 2019\\2020")])
    cfg = config(
        bed,
        tmp_path,
        source={"test_user": t.addresses[0]},
        options={"users": {"include": [t.addresses[0], slash.addresses[0], back.addresses[0]]}},
    )
    report = preflight(cfg)
    assert "PF-USR-005" in codes(report.findings, slash.addresses[0])
    assert "PF-USR-005" in codes(report.findings, back.addresses[0])
    assert "PF-USR-005" not in codes(report.findings, t.addresses[0])

    # A rerun's preflight leaves a finished user's folder names to its transfer, which
    # refuses them with the real adapter before anything is read.
    again = preflight(cfg, folders_checked_by_transfer={back.addresses[0]})
    assert "PF-USR-005" in codes(again.findings, slash.addresses[0])
    assert "PF-USR-005" not in codes(again.findings, back.addresses[0])
    assert again.folders_left_to_transfer == {back.addresses[0]}
    finished = next(u for u in again.users if u.key == back.addresses[0])
    with Journal.open(directory=tmp_path / "state") as journal:
        with pytest.raises(UserError) as refused:
            extract_user(cfg, journal, finished, check_folder_names=True)
        assert refused.value.code == "SXM-USR-004"
        assert "Archive/Budget 2019" in refused.value.message
        assert list(journal.entries(cfg.tenant, finished.key)) == []


def test_destination_with_wrong_password(bed: TenantSlice, tmp_path: Path) -> None:
    t = new_user(bed, "tester")
    cfg = config(
        bed,
        tmp_path,
        source={"test_user": t.addresses[0]},
        destination=dest_for(bed, wrong=True),
    )
    report = preflight(cfg, check_folders=False)
    found = [f for f in report.findings if f.code == "PF-DST-002"]
    assert found
    assert found[0].severity is Severity.blocking
    assert "wrong-" not in found[0].message  # no secret in the finding


def test_unknown_ssh_host_key_is_a_blocking_finding(bed: TenantSlice, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cfg = config(bed, tmp_path, ssh={"host_key_fingerprint": None, "known_hosts": str(empty)})
    report = run_preflight(cfg)
    [f] = [f for f in report.findings if f.code == "PF-SSH-002"]
    assert f.severity is Severity.blocking
    assert bed.host_key_fingerprint.rstrip("=") in f.message


def test_staging_too_small_and_connected_users(bed: TenantSlice, tmp_path: Path) -> None:
    t = new_user(bed, "tester")
    huge = new_user(bed, "huge", mailbox_kib=2**40, sessions=["IMAP client"])
    cfg = config(
        bed,
        tmp_path,
        source={"test_user": t.addresses[0]},
        options={"users": {"include": [t.addresses[0], huge.addresses[0]]}},
    )
    report = preflight(cfg, check_folders=False)
    assert "PF-STG-001" in codes(report.blocking)
    assert "PF-SES-001" in codes(report.findings, huge.addresses[0])


def test_split_level_is_reported_as_a_name_with_slash() -> None:
    from scalix_migrate.preflight import _bad_folder_names
    from scalix_migrate.records import ScalixUser, SourceFolder

    def listed(name: str, *attributes: str) -> SourceFolder:
        selectable = not any(a.lower() == "\\noselect" for a in attributes)
        return SourceFolder(name, name, "/", frozenset(attributes), selectable=selectable)

    user = ScalixUser("A", "m", addresses=("a@x.test",))
    listing = [
        listed("INBOX", "\\HasChildren"),
        listed("Other Users", "\\Noselect", "\\HasChildren"),
        listed("Q1", "\\NoSelect", "\\HasChildren"),
        listed("Q1/Q2 report", "\\HasNoChildren"),
        listed("Projects", "\\HasChildren"),
        listed("Projects/2024", "\\HasNoChildren"),
    ]
    [f] = _bad_folder_names(user, listing)
    assert f.code == "PF-USR-005"
    assert "'Q1/Q2 report'" in f.message
    assert f.user == "a@x.test"


def test_admin_whose_full_admin_line_is_not_printed_does_not_block(
    bed: TenantSlice, tmp_path: Path
) -> None:
    """A Scalix that prints the capability list but no "full administrator" line (issue 11)."""
    t = new_user(bed, "tester")
    listed = new_user(bed, "capadmin", capabilities=["admin", "mboxadmin"], full_admin=None)
    silent = new_user(bed, "silentadmin", capabilities=["mboxadmin"], full_admin=None)
    for admin, expect in ((listed, set()), (silent, {"PF-ADM-004"})):
        cfg = config(
            bed,
            tmp_path,
            source={
                "test_user": t.addresses[0],
                "admin_user": admin.auth_id,
                "admin_password": admin.password,
            },
        )
        report = preflight(cfg, check_folders=False)
        assert report.ok, report.to_rows()
        adm = [f for f in report.findings if f.code.startswith("PF-ADM")]
        assert {f.code for f in adm} == expect
        assert all(f.severity is Severity.warning for f in adm)
        if adm:
            assert "opened read-only through the mboxadmin login" in adm[0].message


def test_accepted_finding_is_kept_marked_and_blocks_nothing(
    bed: TenantSlice, tmp_path: Path
) -> None:
    t = new_user(bed, "tester")
    no = new_user(bed, "notfull", capabilities=["mboxadmin"], full_admin=False)
    source = {"test_user": t.addresses[0], "admin_user": no.auth_id, "admin_password": no.password}
    blocked = preflight(config(bed, tmp_path, source=source), check_folders=False)
    assert [f.code for f in blocked.blocking] == ["PF-ADM-002"]

    cfg = config(bed, tmp_path, source=source, preflight={"accept": ["PF-ADM-002"]})
    report = preflight(cfg, check_folders=False)
    assert report.ok
    [row] = [r for r in report.to_rows() if r["code"] == "PF-ADM-002"]
    assert row["accepted"] == "yes"
