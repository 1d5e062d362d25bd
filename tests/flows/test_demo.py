"""``scalix-migrate demo`` end to end: it acts on the preflight report of the flow run."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from scalix_migrate import steps as steps_module
from scalix_migrate.demo import run_demo

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_demo_applies_the_remedies_without_preflight_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """preflight.csv / preflight.md are never written (a read-only reports directory, say):
    the demo still fixes the two users preflight left out, reruns them and matches."""
    monkeypatch.setattr(steps_module, "write_preflight_files", lambda history, directory: [])
    out = io.StringIO()
    console = Console(file=out, width=200, soft_wrap=True)

    code = run_demo(tmp_path / "demo", console)

    text = out.getvalue()
    assert code == 0, text
    assert not (tmp_path / "demo" / "reports" / "preflight.csv").exists()
    assert "preflight PF-USR-001:" in text
    assert "preflight PF-USR-005:" in text
    assert "Rerunning only the users fixed: pshah@acme.test, lars.berg@branch.acme.test" in text
    assert "flow run: Completed 2 of 2 users migrated" in text
