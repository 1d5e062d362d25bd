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

import json
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scalix_migrate.records import (
    FolderCursor,
    ItemClass,
    LedgerEntry,
    LoadState,
    ScalixUser,
    SourceFolder,
)

T = TypeVar("T")
metadata = sa.MetaData()

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
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("error_code", sa.String(16)),
    sa.Column("error_message", sa.Text),
    sa.Column("extract_started", sa.DateTime(timezone=True)),
    sa.Column("extract_finished", sa.DateTime(timezone=True)),
    sa.Column("load_started", sa.DateTime(timezone=True)),
    sa.Column("load_finished", sa.DateTime(timezone=True)),
    sa.Column("claimed_by", sa.Text),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
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
    sa.Column("error_code", sa.String(16)),
    sa.Column("error_detail", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("tenant", "user_key", "folder", "uidvalidity", "uid", name="uq_msg"),
    sa.Index("ix_msg_user_state", "tenant", "user_key", "load_state"),
    sa.Index("ix_msg_hash", "tenant", "user_key", "folder", "sha256"),
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


def flags_from_text(text: str) -> frozenset[str]:
    return frozenset(json.loads(text))


@dataclass(frozen=True)
class UserRow:
    tenant: str
    user_key: str
    display_name: str | None
    email: str | None
    status: str
    error_code: str | None
    error_message: str | None
    extract_started: datetime | None
    extract_finished: datetime | None
    load_started: datetime | None
    load_finished: datetime | None


class Journal:
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
                cur.execute("PRAGMA journal_mode=WAL")
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

    def _insert_ignore(self, table: sa.Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()

    # --- users --------------------------------------------------------------------------

    def upsert_users(self, tenant: str, found: Sequence[ScalixUser]) -> None:
        """Record discovered users; keeps the status of users already known."""
        now = _now()
        with self.engine.begin() as conn:
            for u in found:
                values = {
                    "display_name": u.display_name,
                    "mailnode": u.mailnode,
                    "email": u.primary_address,
                    "auth_id": u.auth_id,
                    "details": json.dumps(dict(u.details)),
                    "updated_at": now,
                }
                res = conn.execute(
                    users.update()
                    .where(users.c.tenant == tenant, users.c.user_key == u.key)
                    .values(**values)
                )
                if res.rowcount == 0 and self._rekey_user(conn, tenant, u):
                    continue
                if res.rowcount == 0:
                    # Another worker may insert the same user between our UPDATE and INSERT
                    # (two waves discovering at once): its row wins, with the same data.
                    conn.execute(
                        self._insert_ignore(users).values(
                            tenant=tenant, user_key=u.key, status="pending", **values
                        )
                    )

    def _rekey_user(self, conn: sa.Connection, tenant: str, u: ScalixUser) -> bool:
        """The user's key is its primary address; when the operator moves another address to
        the top (preflight's export-name remedy), the same Scalix user (display name and
        mailnode) comes back under a new key. A row with nothing migrated yet follows it;
        one with a ledger stays, so its history is not rewritten."""
        old = conn.execute(
            sa.select(users.c.user_key).where(
                users.c.tenant == tenant,
                users.c.display_name == u.display_name,
                users.c.mailnode == u.mailnode,
                users.c.user_key != u.key,
            )
        ).first()
        if old is None:
            return False
        has_ledger = conn.execute(
            sa.select(messages.c.id)
            .where(messages.c.tenant == tenant, messages.c.user_key == old.user_key)
            .limit(1)
        ).first()
        if has_ledger is not None:
            return False
        conn.execute(
            users.update()
            .where(users.c.tenant == tenant, users.c.user_key == old.user_key)
            .values(
                user_key=u.key,
                email=u.primary_address,
                auth_id=u.auth_id,
                details=json.dumps(dict(u.details)),
                status="pending",
                error_code=None,
                error_message=None,
                updated_at=_now(),
            )
        )
        conn.execute(
            folders.delete().where(folders.c.tenant == tenant, folders.c.user_key == old.user_key)
        )
        return True

    def set_user_status(
        self,
        tenant: str,
        user_key: str,
        status: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        **timestamps: datetime,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                users.update()
                .where(
                    users.c.tenant == tenant,
                    users.c.user_key == user_key,
                )
                .values(
                    status=status,
                    error_code=error_code,
                    error_message=error_message,
                    updated_at=_now(),
                    **timestamps,
                )
            )

    def user_rows(self, tenant: str) -> list[UserRow]:
        cols = [users.c[f] for f in UserRow.__dataclass_fields__]
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*cols).where(users.c.tenant == tenant).order_by(users.c.user_key)
            ).all()
        out = []
        for r in rows:
            m = dict(r._mapping)
            for k in ("extract_started", "extract_finished", "load_started", "load_finished"):
                m[k] = _aware(m[k])
            out.append(UserRow(**m))
        return out

    def users_with_status(self, tenant: str, *statuses: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.scalars(
                    sa.select(users.c.user_key)
                    .where(users.c.tenant == tenant, users.c.status.in_(statuses))
                    .order_by(users.c.user_key)
                )
            )

    def claim_user(
        self,
        tenant: str,
        user_key: str,
        *,
        worker: str | None = None,
        lease: timedelta = timedelta(hours=6),
    ) -> str | None:
        """Take the user for this worker (renewing an own claim).

        Returns None when taken, else the holder. A claim is stale, and taken over, when its
        lease ran out or when its holder was a process on this host that no longer exists (a
        crashed run retried here must not wait for the lease).
        """
        worker = worker or this_worker()
        now = _now()
        with self.engine.begin() as conn:
            holder = conn.execute(
                sa.select(users.c.claimed_by, users.c.claimed_at).where(
                    users.c.tenant == tenant, users.c.user_key == user_key
                )
            ).first()
            if holder is None:
                return None  # not in the journal (yet): nothing to hold
            claimed_at = _aware(holder.claimed_at)
            live = (
                holder.claimed_by is not None
                and holder.claimed_by != worker
                and claimed_at is not None
                and claimed_at >= now - lease
                and not _dead_local_process(holder.claimed_by)
            )
            if live:
                return str(holder.claimed_by)
            res = conn.execute(
                users.update()
                .where(
                    users.c.tenant == tenant,
                    users.c.user_key == user_key,
                    # compare-and-set: nobody took it since we looked
                    users.c.claimed_by.is_(None)
                    if holder.claimed_by is None
                    else users.c.claimed_by == holder.claimed_by,
                )
                .values(claimed_by=worker, claimed_at=now)
            )
            return None if res.rowcount == 1 else "another worker (just now)"

    def release_user(self, tenant: str, user_key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                users.update()
                .where(
                    users.c.tenant == tenant,
                    users.c.user_key == user_key,
                )
                .values(claimed_by=None, claimed_at=None)
            )

    # --- folders and cursors ------------------------------------------------------------

    def open_folder(
        self,
        tenant: str,
        user_key: str,
        folder: SourceFolder,
        uidvalidity: int,
        *,
        source_count: int | None = None,
    ) -> FolderCursor:
        """Return the folder's cursor for ``uidvalidity``, re-planning it if that changed."""
        now = _now()
        key = (
            folders.c.tenant == tenant,
            folders.c.user_key == user_key,
            folders.c.folder == folder.name,
        )
        special = folder.special.value if folder.special else None
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(folders.c.uidvalidity, folders.c.highest_uid).where(*key)
            ).first()
            if row is None:
                conn.execute(
                    folders.insert().values(
                        tenant=tenant,
                        user_key=user_key,
                        folder=folder.name,
                        uidvalidity=uidvalidity,
                        highest_uid=0,
                        special=special,
                        folder_class=folder.folder_class,
                        source_count=source_count,
                        updated_at=now,
                    )
                )
                return FolderCursor(folder.name, uidvalidity, 0)
            if int(row.uidvalidity) != uidvalidity:
                conn.execute(
                    folders.update()
                    .where(*key)
                    .values(
                        uidvalidity=uidvalidity,
                        highest_uid=0,
                        replans=folders.c.replans + 1,
                        source_count=source_count,
                        updated_at=now,
                    )
                )
                return FolderCursor(folder.name, uidvalidity, 0)
            conn.execute(
                folders.update()
                .where(*key)
                .values(
                    special=special,
                    folder_class=folder.folder_class,
                    source_count=source_count,
                    updated_at=now,
                )
            )
            return FolderCursor(folder.name, uidvalidity, int(row.highest_uid))

    def set_dest_folder(self, tenant: str, user_key: str, folder: str, dest_folder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                folders.update()
                .where(
                    folders.c.tenant == tenant,
                    folders.c.user_key == user_key,
                    folders.c.folder == folder,
                )
                .values(dest_folder=dest_folder)
            )

    def folder_rows(self, tenant: str, user_key: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    sa.select(folders)
                    .where(folders.c.tenant == tenant, folders.c.user_key == user_key)
                    .order_by(folders.c.folder)
                )
            ]

    # --- ledger -------------------------------------------------------------------------

    def record_batch(
        self,
        tenant: str,
        user_key: str,
        cursor: FolderCursor,
        entries: Sequence[LedgerEntry],
        highest_uid: int,
    ) -> FolderCursor:
        """Store ledger rows and advance the cursor in one transaction.

        A row whose (folder, UIDVALIDITY, UID) is known is left as it is (its flags are
        refreshed). A new row whose bytes the folder already holds under an *older*
        UIDVALIDITY takes over that row's load state and destination UID, so a re-planned
        folder is not loaded twice; the old row becomes ``superseded``.
        """
        now = _now()
        with self.engine.begin() as conn:
            groups: dict[tuple[str, int], list[LedgerEntry]] = {}
            for e in entries:
                groups.setdefault((e.folder, e.uidvalidity), []).append(e)
            for (folder, uidvalidity), group in groups.items():
                self._record_group(conn, tenant, user_key, folder, uidvalidity, group, now)
            new_high = max(cursor.highest_uid, highest_uid)
            conn.execute(
                folders.update()
                .where(
                    folders.c.tenant == tenant,
                    folders.c.user_key == user_key,
                    folders.c.folder == cursor.folder,
                    folders.c.uidvalidity == cursor.uidvalidity,
                )
                .values(highest_uid=new_high, updated_at=now)
            )
        return FolderCursor(cursor.folder, cursor.uidvalidity, new_high)

    def _record_group(
        self,
        conn: sa.Connection,
        tenant: str,
        user_key: str,
        folder: str,
        uidvalidity: int,
        group: Sequence[LedgerEntry],
        now: datetime,
    ) -> None:
        """record_batch for one (folder, UIDVALIDITY): a few set-based statements, not a
        handful per message (the journal was the extract's bottleneck)."""
        mine = (
            messages.c.tenant == tenant,
            messages.c.user_key == user_key,
            messages.c.folder == folder,
        )
        existing: dict[int, int] = {}
        for chunk in _chunks([e.uid for e in group]):
            existing.update(
                (int(r.uid), int(r.id))
                for r in conn.execute(
                    sa.select(messages.c.uid, messages.c.id).where(
                        *mine, messages.c.uidvalidity == uidvalidity, messages.c.uid.in_(chunk)
                    )
                )
            )
        known = [e for e in group if e.uid in existing]
        if known:
            conn.execute(
                messages.update()
                .where(messages.c.id == sa.bindparam("row_id"))
                .values(flags=sa.bindparam("new_flags")),  # updated_at: see update_flags
                [{"row_id": existing[e.uid], "new_flags": flags_to_text(e.flags)} for e in known],
            )
        fresh = [e for e in group if e.uid not in existing]
        if not fresh:
            return
        # Twins: the same bytes under an older UIDVALIDITY, each taken over at most once.
        twins: dict[str, list[Any]] = {}
        for shas in _chunks(sorted({e.sha256 for e in fresh})):
            for r in conn.execute(
                sa.select(
                    messages.c.id,
                    messages.c.sha256,
                    messages.c.load_state,
                    messages.c.dest_folder,
                    messages.c.dest_uid,
                    messages.c.dest_flags,
                )
                .where(
                    *mine,
                    messages.c.sha256.in_(shas),
                    messages.c.uidvalidity != uidvalidity,
                    messages.c.load_state != LoadState.superseded.value,
                )
                .order_by(messages.c.id)
            ):
                twins.setdefault(r.sha256, []).append(r)
        rows: list[dict[str, Any]] = []
        superseded: list[int] = []
        for e in fresh:
            row = {
                "tenant": tenant,
                "user_key": user_key,
                "folder": e.folder,
                "uidvalidity": e.uidvalidity,
                "uid": e.uid,
                "sha256": e.sha256,
                "size": e.size,
                "internaldate": e.internaldate.astimezone(UTC),  # SQLite keeps no zone
                "flags": flags_to_text(e.flags),
                "message_id": e.message_id,
                "item_class": e.item_class.value,
                "load_state": e.load_state.value,
                "dest_folder": e.dest_folder,
                "dest_uid": e.dest_uid,
                "dest_flags": None,
                "updated_at": now,
            }
            if twins.get(e.sha256):
                twin = twins[e.sha256].pop(0)
                superseded.append(int(twin.id))
                row.update(
                    load_state=twin.load_state,
                    dest_folder=twin.dest_folder,
                    dest_uid=twin.dest_uid,
                    dest_flags=twin.dest_flags,
                )
            rows.append(row)
        for ids in _chunks(superseded):
            conn.execute(
                messages.update()
                .where(messages.c.id.in_(ids))
                .values(load_state=LoadState.superseded.value, updated_at=now)
            )
        conn.execute(messages.insert(), rows)

    def update_flags(
        self,
        tenant: str,
        user_key: str,
        folder: str,
        uidvalidity: int,
        flags_by_uid: dict[int, frozenset[str]],
    ) -> int:
        """Refresh the source flags of known messages; returns how many changed."""
        changed = 0
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(messages.c.id, messages.c.uid, messages.c.flags).where(
                    messages.c.tenant == tenant,
                    messages.c.user_key == user_key,
                    messages.c.folder == folder,
                    messages.c.uidvalidity == uidvalidity,
                )
            ).all()
            for r in rows:
                new = flags_by_uid.get(int(r.uid))
                if new is not None and flags_to_text(new) != r.flags:
                    conn.execute(
                        messages.update()
                        .where(messages.c.id == r.id)
                        # updated_at stays: for loaded rows it is the load time, which the
                        # daily byte budget counts (a flag change moves no bytes).
                        .values(flags=flags_to_text(new))
                    )
                    changed += 1
        return changed

    def entries(
        self,
        tenant: str,
        user_key: str,
        *,
        states: Sequence[LoadState] | None = None,
        folder: str | None = None,
    ) -> Iterator[LedgerEntry]:
        """Ledger rows of a user in (folder, uid) order, optionally filtered by load state."""
        q = sa.select(messages).where(messages.c.tenant == tenant, messages.c.user_key == user_key)
        if states is not None:
            q = q.where(messages.c.load_state.in_([s.value for s in states]))
        if folder is not None:
            q = q.where(messages.c.folder == folder)
        q = q.order_by(messages.c.folder, messages.c.uidvalidity, messages.c.uid)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        for r in rows:
            yield _entry(r._mapping)

    def set_load_state(
        self,
        ids: Sequence[int],
        state: LoadState,
        *,
        dest_folder: str | None = None,
        dest_uid: str | None = None,
        error_code: str | None = None,
        error_detail: str | None = None,
    ) -> None:
        if not ids:
            return
        values: dict[str, Any] = {
            "load_state": state.value,
            "updated_at": _now(),
            "error_code": error_code,
            "error_detail": error_detail,
        }
        if dest_folder is not None:
            values["dest_folder"] = dest_folder
        if dest_uid is not None:
            values["dest_uid"] = dest_uid
        with self.engine.begin() as conn:
            conn.execute(messages.update().where(messages.c.id.in_(list(ids))).values(**values))

    def counts_by_state(self, tenant: str, user_key: str | None = None) -> dict[str, int]:
        q = sa.select(messages.c.load_state, sa.func.count()).where(messages.c.tenant == tenant)
        if user_key is not None:
            q = q.where(messages.c.user_key == user_key)
        with self.engine.connect() as conn:
            return {s: int(n) for s, n in conn.execute(q.group_by(messages.c.load_state))}

    def item_errors(self, tenant: str) -> list[dict[str, Any]]:
        """``failed`` rows: messages that could not be read or written."""
        return self._rows_with_problems(tenant, messages.c.load_state == LoadState.failed.value)

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

    def loaded_with_dest_flags(
        self, tenant: str, user_key: str
    ) -> Iterator[tuple[LedgerEntry, frozenset[str] | None]]:
        """Loaded rows of a user with the flags the destination was given (None: unknown,
        e.g. loaded by an older version or reconciled after a crash)."""
        q = (
            sa.select(messages)
            .where(
                messages.c.tenant == tenant,
                messages.c.user_key == user_key,
                messages.c.load_state == LoadState.loaded.value,
                messages.c.dest_folder.is_not(None),
            )
            .order_by(messages.c.dest_folder, messages.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        for r in rows:
            m = r._mapping
            given = m["dest_flags"]
            yield _entry(m), (flags_from_text(given) if given is not None else None)

    def set_dest_flags(
        self, updates: Sequence[tuple[int, frozenset[str] | None, str | None]]
    ) -> None:
        """Record ``(row id, flags the destination now has, destination id or None to keep
        it)`` for loaded rows, in one transaction."""
        if not updates:
            return
        with self.engine.begin() as conn:
            for row_id, given, dest_uid in updates:
                # updated_at is left alone: it dates the load (the daily byte budget counts it).
                values: dict[str, Any] = {
                    "dest_flags": flags_to_text(given) if given is not None else None
                }
                if dest_uid is not None:
                    values["dest_uid"] = dest_uid
                conn.execute(messages.update().where(messages.c.id == row_id).values(**values))

    # --- restart-service bookkeeping and the command log --------------------------------

    def record_change(self, tenant: str, kind: str, target: str, undo_command: str) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(
                service_changes.insert().values(
                    tenant=tenant,
                    kind=kind,
                    target=target,
                    undo_command=undo_command,
                    done_at=_now(),
                )
            )
            key = res.inserted_primary_key
            assert key is not None  # an INSERT into a table with an integer primary key
            return int(key[0])

    def pending_undos(self, tenant: str) -> list[dict[str, Any]]:
        """Changes not yet undone, newest first (undo in reverse order)."""
        with self.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    sa.select(service_changes)
                    .where(
                        service_changes.c.tenant == tenant, service_changes.c.undone_at.is_(None)
                    )
                    .order_by(service_changes.c.id.desc())
                )
            ]

    def mark_undone(self, change_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                service_changes.update()
                .where(service_changes.c.id == change_id)
                .values(undone_at=_now())
            )

    def log_command(
        self, tenant: str, host: str, command: str, exit_status: int | None, duration_s: float
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                command_log.insert().values(
                    tenant=tenant,
                    at=_now(),
                    host=host,
                    command=command,
                    exit_status=exit_status,
                    duration_s=duration_s,
                )
            )

    def commands(self, tenant: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    sa.select(command_log)
                    .where(command_log.c.tenant == tenant)
                    .order_by(command_log.c.id)
                )
            ]

    def set_item_errors(
        self,
        tenant: str,
        user_key: str,
        folder: str,
        uidvalidity: int,
        errors: dict[int, tuple[str | None, str]],
    ) -> None:
        """Attach ``(error_code, detail)`` to failed or skipped rows of one folder, by UID."""
        if not errors:
            return
        with self.engine.begin() as conn:
            for uid, (code, detail) in errors.items():
                conn.execute(
                    messages.update()
                    .where(
                        messages.c.tenant == tenant,
                        messages.c.user_key == user_key,
                        messages.c.folder == folder,
                        messages.c.uidvalidity == uidvalidity,
                        messages.c.uid == uid,
                        messages.c.load_state.in_(
                            [LoadState.failed.value, LoadState.skipped.value]
                        ),
                    )
                    .values(error_code=code, error_detail=detail, updated_at=_now())
                )

    def unfetched_rows(
        self, tenant: str, user_key: str, folder: str, uidvalidity: int
    ) -> list[LedgerEntry]:
        """Rows of one folder that failed at extract (no staged bytes: placeholder hash).

        These are the ``failed`` rows whose hash is the extract's ``unfetched-`` placeholder;
        rows that failed at load carry a real hash and are not returned.
        """
        q = (
            sa.select(messages)
            .where(
                messages.c.tenant == tenant,
                messages.c.user_key == user_key,
                messages.c.folder == folder,
                messages.c.uidvalidity == uidvalidity,
                messages.c.load_state == LoadState.failed.value,
                messages.c.sha256.like("unfetched-%"),  # extract's placeholder
            )
            .order_by(messages.c.uid)
        )
        with self.engine.connect() as conn:
            return [_entry(r._mapping) for r in conn.execute(q).all()]

    def record_refetched(self, tenant: str, user_key: str, entries: Sequence[LedgerEntry]) -> int:
        """Turn ``unfetched-`` failed rows into the staged rows ``entries`` (one transaction).

        Each entry replaces the row with its (folder, UIDVALIDITY, UID): hash, size, date,
        flags, Message-ID, item class and load state; the error is cleared. As in
        :meth:`record_batch`, bytes the folder already holds under an older UIDVALIDITY take
        over that row's load state and destination (it becomes ``superseded``), so a message
        loaded before a re-plan is not loaded twice. Returns how many rows were updated; rows
        that are no longer ``unfetched-`` failures are left alone.
        """
        now = _now()
        updated = 0
        with self.engine.begin() as conn:
            for e in entries:
                row = conn.execute(
                    sa.select(messages.c.id).where(
                        messages.c.tenant == tenant,
                        messages.c.user_key == user_key,
                        messages.c.folder == e.folder,
                        messages.c.uidvalidity == e.uidvalidity,
                        messages.c.uid == e.uid,
                        messages.c.load_state == LoadState.failed.value,
                        messages.c.sha256.like("unfetched-%"),  # extract's placeholder
                    )
                ).first()
                if row is None:
                    continue
                state, dest_folder, dest_uid = e.load_state.value, e.dest_folder, e.dest_uid
                twin = conn.execute(
                    sa.select(
                        messages.c.id,
                        messages.c.load_state,
                        messages.c.dest_folder,
                        messages.c.dest_uid,
                    )
                    .where(
                        messages.c.tenant == tenant,
                        messages.c.user_key == user_key,
                        messages.c.folder == e.folder,
                        messages.c.sha256 == e.sha256,
                        messages.c.uidvalidity != e.uidvalidity,
                        messages.c.load_state != LoadState.superseded.value,
                    )
                    .limit(1)
                ).first()
                if twin is not None:
                    state, dest_folder, dest_uid = twin.load_state, twin.dest_folder, twin.dest_uid
                    conn.execute(
                        messages.update()
                        .where(messages.c.id == twin.id)
                        .values(load_state=LoadState.superseded.value, updated_at=now)
                    )
                conn.execute(
                    messages.update()
                    .where(messages.c.id == row.id)
                    .values(
                        sha256=e.sha256,
                        size=e.size,
                        internaldate=e.internaldate.astimezone(UTC),
                        flags=flags_to_text(e.flags),
                        message_id=e.message_id,
                        item_class=e.item_class.value,
                        load_state=state,
                        dest_folder=dest_folder,
                        dest_uid=dest_uid,
                        error_code=None,
                        error_detail=None,
                        updated_at=now,
                    )
                )
                updated += 1
        return updated

    def skipped_with_reason(self, tenant: str) -> list[dict[str, Any]]:
        """``skipped`` rows that carry an error code (e.g. over-size, SXM-IMAP-006).

        Same columns as :meth:`item_errors`; rows skipped on purpose without a code (date
        range, ``\\Deleted``) are not listed.
        """
        return self._rows_with_problems(
            tenant,
            sa.and_(
                messages.c.load_state == LoadState.skipped.value,
                messages.c.error_code.is_not(None),
            ),
        )

    def _rows_with_problems(self, tenant: str, which: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    sa.select(
                        messages.c.user_key,
                        messages.c.folder,
                        messages.c.uidvalidity,
                        messages.c.uid,
                        messages.c.size,
                        messages.c.message_id,
                        messages.c.error_code,
                        messages.c.error_detail,
                    )
                    .where(messages.c.tenant == tenant, which)
                    .order_by(messages.c.user_key, messages.c.folder, messages.c.uid)
                )
            ]


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
    )
