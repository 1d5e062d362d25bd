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

import atexit
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scalix_migrate.private import private_file
from scalix_migrate.state.groupware import GroupwareJournal, groupware_resources
from scalix_migrate.state.ledger import LedgerJournal
from scalix_migrate.state.ops import OpsJournal
from scalix_migrate.state.preflight_log import PreflightJournal, preflight_findings
from scalix_migrate.state.repairs import RepairsJournal
from scalix_migrate.state.rows import (
    CommandRecord,
    FolderRow,
    FolderSeal,
    ItemProblem,
    SealRow,
    ServiceChange,
)
from scalix_migrate.state.schema import (
    UserRow,
    UserStatus,
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
from scalix_migrate.state.tallies import ItemClassTally, MessageTally, TalliesJournal
from scalix_migrate.state.user_state import UsersJournal
from scalix_migrate.state.verified import VerifiedJournal

__all__ = [
    "CommandRecord",
    "FolderRow",
    "FolderSeal",
    "ItemClassTally",
    "ItemProblem",
    "Journal",
    "MessageTally",
    "SealRow",
    "ServiceChange",
    "UserRow",
    "UserStatus",
    "command_log",
    "flags_from_text",
    "flags_to_text",
    "folders",
    "groupware_resources",
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


# (table, column, DDL type) of columns added after the first journal files were written.
_NEWER_COLUMNS = [
    ("messages", "dest_flags", "TEXT"),
    ("messages", "verified_gen", "TEXT"),
    ("messages", "verified_sig", "TEXT"),
    ("folders", "modseq", "TEXT"),
    ("users", "retries", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "reconnects", "INTEGER NOT NULL DEFAULT 0"),
]


class Journal(
    UsersJournal,
    LedgerJournal,
    RepairsJournal,
    OpsJournal,
    GroupwareJournal,
    PreflightJournal,
    TalliesJournal,
    VerifiedJournal,
):
    """The migration state of one or more tenants."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _create_schema(engine)
        self._add_missing_columns()

    @classmethod
    def open(cls, *, url: str | None = None, directory: Path | None = None) -> Journal:
        """Open (and create) the journal at ``url`` or as SQLite in ``directory``."""
        return cls._open_url(_journal_url(url, directory))

    @classmethod
    def shared(cls, *, url: str | None = None, directory: Path | None = None) -> Journal:
        """This process's journal at ``url`` / ``directory``, opened once and kept.

        Opening costs an engine, the schema check and a column inspection: per step and
        user that was a good part of a small user's time. The shared journal is never
        closed by its users (``close`` is for :meth:`open`'s); a SQLite file that was
        removed or replaced since is opened afresh.
        """
        key = _journal_url(url, directory)
        with _SHARED_LOCK:
            found = _SHARED.get(key)
            if found is not None and found[1] == _file_identity(key):
                _SHARED.move_to_end(key)
                return found[0]
            journal = cls._open_url(key)
            _SHARED[key] = (journal, _file_identity(key))
            while len(_SHARED) > _SHARED_MAX:
                # Connections still checked out of a disposed engine close when returned.
                _SHARED.popitem(last=False)[1][0].close()
            return journal

    @classmethod
    def _open_url(cls, url: str) -> Journal:
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
        """Add the columns newer than the journal file; idempotent.

        One inspector and one ``get_columns`` per table (each a round trip), per opening;
        :meth:`shared` opens once per process. Two workers may both see a column missing:
        the loser's ALTER fails, and is fine as long as the column is there afterwards.
        """
        inspector = sa.inspect(self.engine)
        present = {
            table: {c["name"] for c in inspector.get_columns(table)}
            for table in sorted({t for t, _, _ in _NEWER_COLUMNS})
        }
        for table, column, ddl in _NEWER_COLUMNS:
            if column in present[table]:
                continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
            except sa.exc.DBAPIError:
                names = {c["name"] for c in sa.inspect(self.engine).get_columns(table)}
                if column not in names:
                    raise


def _journal_url(url: str | None, directory: Path | None) -> str:
    if url is not None:
        return url
    directory = Path(directory or ".scalix-migrate/state")
    return f"sqlite:///{private_file(directory.resolve() / 'journal.sqlite')}"


def _file_identity(url: str) -> tuple[int, int] | None:
    """(device, inode) of a SQLite journal file; None for a server URL or no file yet."""
    if not url.startswith("sqlite:///"):
        return None
    try:
        st = os.stat(url[len("sqlite:///") :])
    except OSError:
        return None
    return st.st_dev, st.st_ino


_SHARED: OrderedDict[str, tuple[Journal, tuple[int, int] | None]] = OrderedDict()
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 8  # journals a process keeps open (tests open many; a run uses one)


def _forget_shared_in_child() -> None:
    # A forked child must not use its parent's database connections: it opens its own.
    for journal, _ in _SHARED.values():
        journal.engine.dispose(close=False)
    _SHARED.clear()


os.register_at_fork(after_in_child=_forget_shared_in_child)


@atexit.register
def _close_shared() -> None:
    with _SHARED_LOCK:
        while _SHARED:
            _SHARED.popitem()[1][0].close()
