from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.destinations.base import Layout
from scalix_migrate.folders import SourceFolderInfo, plan_folders
from scalix_migrate.records import SpecialFolder
from tests.contract.conftest import base_config

SCALIX = [
    SourceFolderInfo("INBOX", SpecialFolder.inbox),
    SourceFolderInfo("INBOX/Projekte", None),
    SourceFolderInfo("Gesendete Objekte", SpecialFolder.sent),
    SourceFolderInfo("Gesendete Objekte/2019", None),
    SourceFolderInfo("Gelöschte Objekte", SpecialFolder.deleted),
    SourceFolderInfo("Entwürfe", SpecialFolder.drafts),
    SourceFolderInfo("Junk-E-Mail", SpecialFolder.junk),
    SourceFolderInfo("Kalender", SpecialFolder.calendar, "IPF.Appointment"),
    SourceFolderInfo("Sent", None),
]


def plan(
    tmp_path: Path, layout: Layout, sources: list[SourceFolderInfo] = SCALIX, **options: Any
) -> dict[str, str | None]:
    cfg = base_config(tmp_path, "destination:\n  type: mbox\n  path: /x\n", **options)
    return {p.source: p.destination for p in plan_folders(cfg, sources, layout)}


def test_gmail_preset_by_special_folder_not_by_name(tmp_path: Path) -> None:
    got = plan(tmp_path, Layout(preset="gmail", separator="/"))
    assert got["Gesendete Objekte"] == "[Gmail]/Sent Mail"
    assert got["Gesendete Objekte/2019"] == "[Gmail]/Sent Mail/2019"
    assert got["Gelöschte Objekte"] == "[Gmail]/Trash"
    assert got["Entwürfe"] == "[Gmail]/Drafts"
    assert got["Junk-E-Mail"] == "[Gmail]/Spam"
    assert got["Kalender"] == "Kalender"  # groupware folders load as mail folders by name
    assert got["Sent"] == "Sent"


def test_m365_preset_and_case_insensitive_collision(tmp_path: Path) -> None:
    sources = [*SCALIX, SourceFolderInfo("sent items"), SourceFolderInfo("Files")]
    got = plan(tmp_path, Layout(preset="m365", separator="/", case_insensitive=True), sources)
    assert got["Gesendete Objekte"] == "Sent Items"
    assert got["Gelöschte Objekte"] == "Deleted Items"
    assert got["Junk-E-Mail"] == "Junk Email"
    assert got["sent items"] == "sent items (2)"
    assert got["Files"] == "Files (Scalix)"


def test_special_use_advertised_wins_over_preset_and_prefix_separator(tmp_path: Path) -> None:
    layout = Layout(
        preset="generic", separator=".", prefix="INBOX.", special_use={"\\Sent": "INBOX.Gesendet"}
    )
    got = plan(tmp_path, layout)
    assert got["Gesendete Objekte"] == "INBOX.Gesendet"
    assert got["Gesendete Objekte/2019"] == "INBOX.Gesendet.2019"
    assert got["Gelöschte Objekte"] == "INBOX.Trash"
    assert got["INBOX/Projekte"] == "INBOX.Projekte"
    assert got["INBOX"] == "INBOX"


def test_separator_inside_a_name_and_gmail_blanks_are_renamed_and_reported(
    tmp_path: Path,
) -> None:
    cfg = base_config(tmp_path, "destination:\n  type: mbox\n  path: /x\n")
    plans = plan_folders(
        cfg,
        [SourceFolderInfo("v1.2 notes"), SourceFolderInfo(" a  b ^x")],
        Layout(preset="gmail", separator="."),
    )
    by = {p.source: p for p in plans}
    assert by["v1.2 notes"].destination == "v1_2 notes"
    assert by[" a  b ^x"].destination == "a b _x"
    assert all(p.notes for p in plans)


def test_renames_and_excludes(tmp_path: Path) -> None:
    got = plan(
        tmp_path,
        Layout(preset="dovecot", separator="/"),
        folders={
            "exclude": ["Kalender"],
            "renames": [{"pattern": "^INBOX/Projekte", "replacement": "Archiv"}],
        },
    )
    assert got["Kalender"] is None
    assert got["INBOX/Projekte"] == "Archiv"
    assert got["Entwürfe"] == "Drafts"


@pytest.mark.parametrize("preset", ["dovecot", "generic"])
def test_default_names_without_special_use(tmp_path: Path, preset: str) -> None:
    got = plan(tmp_path, Layout(preset=preset, separator="/"))
    assert [
        got[n] for n in ("Gesendete Objekte", "Gelöschte Objekte", "Entwürfe", "Junk-E-Mail")
    ] == ["Sent", "Trash", "Drafts", "Junk"]
    assert got["Sent"] == "Sent (2)"
