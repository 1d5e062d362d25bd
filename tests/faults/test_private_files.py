"""State, staging and reports are readable by the migrating account only, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scalix_migrate.private import private_prefect_home
from scalix_migrate.sandbox.directory import SeedMessage
from tests.integration.scalix_bed import TenantSlice, config
from tests.support.migrate import migrate_all


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: 0755 directories, 0644 files
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


@pytest.mark.usefixtures("open_umask")
def test_journal_staging_and_reports_are_0700_and_0600(bed: TenantSlice, tmp_path: Path) -> None:
    u = bed.new_user("priv")
    when = datetime(2021, 3, 4, tzinfo=UTC)
    bed.testbed.seed_messages(
        u.addresses[0],
        [
            SeedMessage(
                "INBOX", b"Subject: p%d\r\nMessage-ID: <p%d@x>\r\n\r\nx\r\n" % (i, i), [], when
            )
            for i in range(3)
        ],
    )
    work = tmp_path / "work"  # made by the tool, under a directory the test owns
    cfg = config(
        bed,
        tmp_path,
        source={"test_user": u.addresses[0]},
        options={
            "staging_dir": str(work / "staging"),
            "reports_dir": str(work / "reports"),
            "state": {"dir": str(work / "state")},
        },
    )
    migrate_all(cfg)
    modes = _modes(work)
    assert any(name.endswith("journal.sqlite") for name in modes)
    assert any(name.endswith("users.csv") for name in modes)
    assert any(name.endswith("preflight.md") for name in modes)
    assert sum(1 for n in modes if n.startswith("staging/")) > 3
    loose = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (work / name).is_dir() else 0o600)
    }
    assert loose == {}


@pytest.mark.usefixtures("open_umask")
def test_a_prefect_home_the_tool_creates_is_0700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home" / ".prefect"))
    home = private_prefect_home()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.parent.stat().st_mode) == 0o700
