"""Tables for people: whole values on a pipe, wrapped on a narrow terminal (issue 11)."""

from __future__ import annotations

import csv
import io

from rich.console import Console

from scalix_migrate.tables import print_table

COLUMNS = ["user", "folder", "status", "found", "loaded", "skipped", "failed", "error_code"]
ROWS = [
    {
        "user": "j.mueller-with-a-long-name@branch.acme.example",
        "folder": "Deleted Items/Archiv 2023/Größe und Ümlaute",
        "status": "done",
        "found": 1234,
        "loaded": 1234,
        "skipped": 0,
        "failed": 0,
        "error_code": "",
    }
]


def test_a_pipe_gets_complete_csv_rows() -> None:
    out = io.StringIO()
    print_table(Console(file=out, width=80), "users", COLUMNS, ROWS)
    assert list(csv.DictReader(io.StringIO(out.getvalue()))) == [
        {k: str(v) for k, v in ROWS[0].items()}
    ]


def test_a_narrow_terminal_wraps_instead_of_cutting() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    print_table(console, "users", COLUMNS, ROWS)
    text = out.getvalue()
    assert "…" not in text
    lines = text.splitlines()
    body = lines[next(i for i, line in enumerate(lines) if line.startswith(("┡", "├"))) + 1 :]
    cells = [line.split("│")[1:-1] for line in body if line.startswith("│")]
    column = ["".join(c[i].strip() for c in cells) for i in range(len(COLUMNS))]
    assert column[0] == ROWS[0]["user"]  # the whole address, wrapped over lines
    assert column[1].replace(" ", "") == str(ROWS[0]["folder"]).replace(" ", "")
