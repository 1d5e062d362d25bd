"""The journal owns its SQL: nothing outside ``scalix_migrate/state/`` speaks SQLAlchemy,
touches the journal's tables or reaches for its engine.

An AST walk over the sources (import-linter would say the same for the imports; the table
and engine checks are beyond it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / "scalix_migrate" / "state"
# The Table objects of the journal's schema, as state/ exports them.
TABLES = {
    "command_log",
    "folders",
    "groupware_resources",
    "messages",
    "metadata",
    "preflight_findings",
    "service_changes",
    "users",
}


def _sources() -> list[Path]:
    files = [*ROOT.joinpath("scalix_migrate").rglob("*.py")]
    files += [*ROOT.joinpath("tasks").rglob("*.py"), *ROOT.joinpath("flows").rglob("*.py")]
    return sorted(f for f in files if STATE not in f.parents)


def _offences(path: Path) -> list[str]:
    return _offences_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


def _offences_in(text: str, where: str) -> list[str]:
    """``where:line what`` for each SQLAlchemy import, table import and ``.engine`` use."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text, filename=where)):
        if isinstance(node, ast.Import):
            out += [
                (node.lineno, f"imports {a.name}")
                for a in node.names
                if a.name.split(".")[0] == "sqlalchemy"
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] == "sqlalchemy":
                out.append((node.lineno, f"imports from {node.module}"))
            elif node.module.startswith("scalix_migrate.state"):
                out += [
                    (node.lineno, f"imports the table {a.name}")
                    for a in node.names
                    if a.name in TABLES
                ]
        elif isinstance(node, ast.Attribute) and node.attr == "engine":
            out.append((node.lineno, "uses a journal's engine"))
    return [f"{where}:{line} {what}" for line, what in sorted(out)]


def test_the_sources_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _sources()}
    assert {"scalix_migrate/load.py", "scalix_migrate/report.py", "tasks/__init__.py"} <= names
    assert not any(n.startswith("scalix_migrate/state/") for n in names)


def test_no_module_outside_state_speaks_sql() -> None:
    offences = [o for path in _sources() for o in _offences(path)]
    assert offences == []


def test_the_walk_sees_each_kind_of_offence() -> None:
    # A check that finds nothing must be able to find something.
    text = (
        "import sqlalchemy as sa\n"
        "from sqlalchemy.engine import Engine\n"
        "from scalix_migrate.state import Journal, messages\n"
        "def f(j: Journal) -> None:\n"
        "    j.engine.connect()\n"
    )
    assert _offences_in(text, "sample.py") == [
        "sample.py:1 imports sqlalchemy",
        "sample.py:2 imports from sqlalchemy.engine",
        "sample.py:3 imports the table messages",
        "sample.py:5 uses a journal's engine",
    ]
