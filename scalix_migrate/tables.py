"""Tables for people: complete on a pipe, wrapped (never cut) on a terminal.

rich cuts cells to fit the terminal (``j.mue…``) and, on a pipe, to 80 columns. An operator
piping ``status`` into ``grep`` or a file needs every address whole, so a non-terminal gets
CSV; a terminal gets a table whose cells wrap (``overflow="fold"``). An edge module (rich).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def print_table(
    console: Console,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    styles: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Print ``rows`` (dicts keyed by ``columns``) as CSV on a pipe, as a table on a terminal.

    ``styles`` colours values on a terminal only: column -> value -> rich style.
    """
    if not console.is_terminal:
        writer = csv.writer(console.file, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_plain(r.get(c, "")) for c in columns] for r in rows)
        console.file.flush()
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        cells = []
        for c in columns:
            value = _plain(r.get(c, ""))
            style = (styles or {}).get(c, {}).get(value, "")
            cells.append(Text(value, style=style))  # Text: no markup in server strings
        table.add_row(*cells)
    console.print(table)


def _plain(value: object) -> str:
    return "" if value is None else str(value)
