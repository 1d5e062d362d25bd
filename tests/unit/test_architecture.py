"""The layers of docs/architecture.md hold: import-linter's contracts and no import cycles.

The contracts are in pyproject.toml (``[tool.importlinter]``): entry points -> flows -> tasks
-> steps -> step modules -> the per-user context -> adapters -> state -> config; no Prefect
below tasks/ (but the lazy ``prefect-secret:`` resolver); pandas only in the report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold() -> None:
    # A child process: import-linter prints its report, and the test shows it on failure.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports;"
            " sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


def _cycles(graph: grimp.ImportGraph) -> set[tuple[str, str]]:
    """Pairs of modules that import each other, directly or through others."""
    found: set[tuple[str, str]] = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.find_shortest_chain(importer=imported, imported=module):
                found.add((min(module, imported), max(module, imported)))
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("scalix_migrate", "tasks", "flows")
    assert "scalix_migrate.steps" in graph.modules  # the walk saw the package
    assert not _cycles(graph)


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph) == {("a.x", "a.y"), ("a.y", "a.z"), ("a.x", "a.z")}
