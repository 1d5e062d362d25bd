"""The journal's tables and the small helpers every part of it shares."""

from __future__ import annotations

import functools
import json
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scalix_migrate.records import (
    ItemClass,
    LedgerEntry,
    LoadState,
)

T = TypeVar("T")
metadata = sa.MetaData()


class UserStatus(StrEnum):
    """Where a user is in the procedure (``users.status``).

    The values are the strings journals, reports and the CLI have always shown; a status that
    is not a member cannot be written (:meth:`Journal.set_user_status` converts).
    """

    pending = "pending"  # discovered, never tried
    extracting = "extracting"
    extracted = "extracted"
    loading = "loading"
    transferring = "transferring"  # extract and load at once
    loaded = "loaded"
    groupware = "groupware"
    verifying = "verifying"
    done = "done"  # verified at the destination
    failed = "failed"  # a step failed; error_code says why
    excluded = "excluded"  # left out by preflight; error_code is the finding
    paused = "paused"  # stopped cleanly by the daily byte budget; resumes next run


users = sa.Table(
    "users",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("user_key", sa.String(320), primary_key=True),
    sa.Column("display_name", sa.Text),
    sa.Column("mailnode", sa.Text),
    sa.Column("email", sa.Text),
    sa.Column("auth_id", sa.Text),
    sa.Column("details", sa.Text),  # JSON of the discovered record
    sa.Column("status", sa.String(16), nullable=False, server_default=UserStatus.pending.value),
    sa.Column("error_code", sa.String(16)),
    sa.Column("error_message", sa.Text),
    sa.Column("extract_started", sa.DateTime(timezone=True)),
    sa.Column("extract_finished", sa.DateTime(timezone=True)),
    sa.Column("load_started", sa.DateTime(timezone=True)),
    sa.Column("load_finished", sa.DateTime(timezone=True)),
    sa.Column("claimed_by", sa.Text),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    # Steps rerun after a transient fault (options.retries), and connections lost and reopened
    # inside steps; summed over every run.
    sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reconnects", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

folders = sa.Table(
    "folders",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("user_key", sa.String(320), primary_key=True),
    sa.Column("folder", sa.Text, primary_key=True),
    sa.Column("uidvalidity", sa.BigInteger, nullable=False),
    sa.Column("highest_uid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("special", sa.String(32)),
    sa.Column("folder_class", sa.String(64)),
    sa.Column("dest_folder", sa.Text),
    sa.Column("source_count", sa.Integer),
    sa.Column("replans", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    # The source's HIGHESTMODSEQ (CONDSTORE) when this UIDVALIDITY was last read through.
    sa.Column("modseq", sa.Text),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("user_key", sa.String(320), nullable=False),
    sa.Column("folder", sa.Text, nullable=False),
    sa.Column("uidvalidity", sa.BigInteger, nullable=False),
    sa.Column("uid", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("internaldate", sa.DateTime(timezone=True), nullable=False),
    sa.Column("flags", sa.Text, nullable=False),  # JSON list, sorted
    sa.Column("message_id", sa.Text),
    sa.Column("item_class", sa.String(16), nullable=False),
    sa.Column("load_state", sa.String(16), nullable=False),
    sa.Column("dest_folder", sa.Text),
    sa.Column("dest_uid", sa.Text),
    sa.Column("dest_flags", sa.Text),  # JSON list: the flags the destination was given
    # The destination folder generation at which verify proved the bytes (verify.py).
    sa.Column("verified_gen", sa.Text),
    # What verify found equal at the destination, as a short digest of the row's compared
    # values and its destination id, set when its folder was sealed (verify.py): a row whose
    # digest still matches is unchanged since, and a sealed folder's later verify compares
    # only the rows and messages that changed.
    sa.Column("verified_sig", sa.Text),
    sa.Column("error_code", sa.String(16)),
    sa.Column("error_detail", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("tenant", "user_key", "folder", "uidvalidity", "uid", name="uq_msg"),
    sa.Index("ix_msg_user_state", "tenant", "user_key", "load_state"),
    sa.Index("ix_msg_hash", "tenant", "user_key", "folder", "sha256"),
)

# A destination folder verify found equal to the ledger, with the destination's state token
# then (IMAP with CONDSTORE: UIDVALIDITY, UIDNEXT, MESSAGES, HIGHESTMODSEQ) and a digest of the
# ledger rows it compared: while both are the same, nothing in the comparison can differ.
verified_folders = sa.Table(
    "verified_folders",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("user_key", sa.String(320), primary_key=True),
    sa.Column("dest_folder", sa.Text, primary_key=True),
    sa.Column("dest_state", sa.Text, nullable=False),
    sa.Column("rows_digest", sa.String(64), nullable=False),
    sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
)

service_changes = sa.Table(
    "service_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # "service-stopped", "account-locked"
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("undo_command", sa.Text, nullable=False),
    sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("undone_at", sa.DateTime(timezone=True)),
)

command_log = sa.Table(
    "command_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("host", sa.Text),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("exit_status", sa.Integer),
    sa.Column("duration_s", sa.Float),
)


def this_worker() -> str:
    """This process's identity in claims: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_local_process(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# Any constant: the key of the PostgreSQL advisory lock that serialises schema creation.
_SCHEMA_LOCK_KEY = 0x5C411A00


def _create_schema(engine: Engine) -> None:
    """Create the missing tables, one worker at a time.

    ``create_all`` checks, then creates: two workers opening an empty journal at once both
    see a table missing and the slower one fails ("already exists"). So the check and the
    creation run under a lock: a transaction-scoped advisory lock on PostgreSQL (its DDL is
    transactional), the database write lock (``BEGIN IMMEDIATE``) on SQLite.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        elif engine.dialect.name == "sqlite":
            # pysqlite opens no transaction for DDL by itself; this one waits on the busy timeout.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        metadata.create_all(conn)
        conn.commit()


def _chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    """Bounded IN-lists (SQLite caps bound parameters per statement)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def flags_to_text(flags: Iterable[str]) -> str:
    return json.dumps(sorted(flags))


@functools.lru_cache(maxsize=4096)
def flags_from_text(text: str) -> frozenset[str]:
    """The flags of a stored flag text. Cached: a mailbox has few distinct flag sets, and
    rows read together then share one frozenset instead of holding one each."""
    return frozenset(json.loads(text))


@dataclass(frozen=True)
class UserRow:
    tenant: str
    user_key: str
    display_name: str | None
    email: str | None
    status: UserStatus
    error_code: str | None
    error_message: str | None
    extract_started: datetime | None
    extract_finished: datetime | None
    load_started: datetime | None
    load_finished: datetime | None
    retries: int = 0
    reconnects: int = 0


def _entry(m: Any) -> LedgerEntry:
    return LedgerEntry(
        id=int(m["id"]),
        folder=m["folder"],
        uidvalidity=int(m["uidvalidity"]),
        uid=int(m["uid"]),
        sha256=m["sha256"],
        size=int(m["size"]),
        internaldate=_aware(m["internaldate"]) or _now(),
        flags=flags_from_text(m["flags"]),
        message_id=m["message_id"],
        item_class=ItemClass(m["item_class"]),
        load_state=LoadState(m["load_state"]),
        dest_folder=m["dest_folder"],
        dest_uid=m["dest_uid"],
        verified_gen=m.get("verified_gen"),
    )
