"""The journal: users, folder cursors and the message ledger (SQLAlchemy Core).

SQLite in ``options.state.dir`` by default; a PostgreSQL URL when several workers share a
tenant. The journal is the truth; the staging store is a cache.

Invariants the rest of the code relies on:

* A folder cursor is valid only for its UIDVALIDITY. :meth:`Journal.open_folder` re-plans a
  folder whose UIDVALIDITY changed: the old rows stay (they say what the destination already
  has) and are matched to the new UIDs by hash, so nothing is appended twice.
* :meth:`Journal.record_batch` writes ledger rows and advances the cursor in one transaction:
  a crash between the two cannot happen.
* Load is two-phase: ``staged`` -> ``appending`` -> ``loaded``. Rows left ``appending`` by a
  crash are reconciled against the destination before anything is appended again.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scalix_migrate.state.ledger import LedgerJournal
from scalix_migrate.state.ops import OpsJournal
from scalix_migrate.state.preflight_log import PreflightJournal, preflight_findings
from scalix_migrate.state.repairs import RepairsJournal
from scalix_migrate.state.schema import (
    UserRow,
    _create_schema,
    command_log,
    flags_from_text,
    flags_to_text,
    folders,
    messages,
    metadata,
    service_changes,
    this_worker,
    users,
)
from scalix_migrate.state.user_state import UsersJournal

__all__ = [
    "Journal",
    "UserRow",
    "command_log",
    "flags_from_text",
    "flags_to_text",
    "folders",
    "messages",
    "metadata",
    "preflight_findings",
    "service_changes",
    "this_worker",
    "users",
]


# SQLite answers "database is locked" at once, without its busy timeout, when connections
# race to switch a fresh file to WAL (seen with workers opening a new journal together).
_WAL_SWITCH_DEADLINE_S = 60.0


def _use_wal(cur: Any) -> None:
    """Put the database in WAL mode (persistent in the file), retrying the switch briefly."""
    deadline = time.monotonic() + _WAL_SWITCH_DEADLINE_S
    delay = 0.01
    while True:
        if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


class Journal(UsersJournal, LedgerJournal, RepairsJournal, OpsJournal, PreflightJournal):
    """The migration state of one or more tenants."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _create_schema(engine)
        self._add_missing_columns()

    @classmethod
    def open(cls, *, url: str | None = None, directory: Path | None = None) -> Journal:
        """Open (and create) the journal at ``url`` or as SQLite in ``directory``."""
        if url is None:
            directory = Path(directory or ".scalix-migrate/state")
            directory.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{directory / 'journal.sqlite'}"
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 60})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _: Any) -> None:
                cur = dbapi_conn.cursor()
                _use_wal(cur)
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_missing_columns(self) -> None:
        """Add columns newer than the journal file (``dest_flags``); idempotent.

        Two workers may both see the column missing: the loser's ALTER fails, and is fine
        as long as the column is there afterwards.
        """
        if "dest_flags" in {c["name"] for c in sa.inspect(self.engine).get_columns("messages")}:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text("ALTER TABLE messages ADD COLUMN dest_flags TEXT"))
        except sa.exc.DBAPIError:
            names = {c["name"] for c in sa.inspect(self.engine).get_columns("messages")}
            if "dest_flags" not in names:
                raise
