"""Folder cursors and the message ledger: extract writes it, load advances it."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from scalix_migrate.records import (
    FolderCursor,
    LedgerEntry,
    LoadState,
    SourceFolder,
)
from scalix_migrate.state.base import JournalBase
from scalix_migrate.state.rows import FolderRow, folder_row
from scalix_migrate.state.schema import (
    _chunks,
    _entry,
    _now,
    flags_to_text,
    folders,
    messages,
)

_FEW = 2000  # flag updates looked up by UID; more read the folder's rows in one query


class LedgerJournal(JournalBase):
    """Part of :class:`scalix_migrate.state.Journal`."""

    def open_folder(
        self,
        tenant: str,
        user_key: str,
        folder: SourceFolder,
        uidvalidity: int,
        *,
        source_count: int | None = None,
        known: FolderRow | None = None,
    ) -> FolderCursor:
        """Return the folder's cursor for ``uidvalidity``, re-planning it if that changed.

        ``known``: the folder's row as read at the start of this extract; when it already
        says all this (the rerun of an unchanged folder), the cursor comes from it without a
        write."""
        special = folder.special.value if folder.special else None
        if (
            known is not None
            and known.folder == folder.name
            and known.uidvalidity == uidvalidity
            and (known.special.value if known.special else None) == special
            and known.folder_class == folder.folder_class
            and known.source_count == source_count
        ):
            return FolderCursor(folder.name, uidvalidity, known.highest_uid, known.modseq)
        now = _now()
        key = (
            folders.c.tenant == tenant,
            folders.c.user_key == user_key,
            folders.c.folder == folder.name,
        )
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(folders.c.uidvalidity, folders.c.highest_uid, folders.c.modseq).where(
                    *key
                )
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
                        modseq=None,  # a MODSEQ of another UIDVALIDITY says nothing
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
            modseq = int(row.modseq) if row.modseq else None
            return FolderCursor(folder.name, uidvalidity, int(row.highest_uid), modseq)

    def set_folder_modseq(
        self, tenant: str, user_key: str, folder: str, uidvalidity: int, modseq: int
    ) -> None:
        """Record that every change up to ``modseq`` is in the journal (call only then)."""
        with self.engine.begin() as conn:
            conn.execute(
                folders.update()
                .where(
                    folders.c.tenant == tenant,
                    folders.c.user_key == user_key,
                    folders.c.folder == folder,
                    folders.c.uidvalidity == uidvalidity,
                )
                .values(modseq=str(modseq))
            )

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

    def folder_rows(self, tenant: str, user_key: str) -> list[FolderRow]:
        """The user's folders (empty ones too), by name."""
        with self.engine.connect() as conn:
            return [
                folder_row(r._mapping)
                for r in conn.execute(
                    sa.select(folders)
                    .where(folders.c.tenant == tenant, folders.c.user_key == user_key)
                    .order_by(folders.c.folder)
                )
            ]

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
        return FolderCursor(cursor.folder, cursor.uidvalidity, new_high, cursor.modseq)

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
        q = sa.select(messages.c.id, messages.c.uid, messages.c.flags).where(
            messages.c.tenant == tenant,
            messages.c.user_key == user_key,
            messages.c.folder == folder,
            messages.c.uidvalidity == uidvalidity,
        )
        with self.engine.begin() as conn:
            if len(flags_by_uid) <= _FEW:  # e.g. a CHANGEDSINCE answer: those rows only
                rows = [
                    r
                    for chunk in _chunks(sorted(flags_by_uid))
                    for r in conn.execute(q.where(messages.c.uid.in_(chunk)))
                ]
            else:
                rows = list(conn.execute(q).all())
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
        dest_folder: str | None = None,
    ) -> Iterator[LedgerEntry]:
        """Ledger rows of a user in (folder, uid) order, optionally filtered by load state,
        source folder or destination folder."""
        q = sa.select(messages).where(messages.c.tenant == tenant, messages.c.user_key == user_key)
        if states is not None:
            q = q.where(messages.c.load_state.in_([s.value for s in states]))
        if folder is not None:
            q = q.where(messages.c.folder == folder)
        if dest_folder is not None:
            q = q.where(messages.c.dest_folder == dest_folder)
        q = q.order_by(messages.c.folder, messages.c.uidvalidity, messages.c.uid)
        # Read in chunks and built into entries as they come: the database rows of a large
        # mailbox are not all held beside their entries. Yielded after the connection is
        # back in the pool, so a caller may write to the journal between entries.
        with self.engine.connect() as conn:
            entries = [_entry(r._mapping) for r in conn.execute(q).yield_per(500)]
        yield from entries

    def entries_with_ids(self, ids: Collection[int]) -> list[LedgerEntry]:
        """The ledger rows with these ids (any user), in id order."""
        wanted = sorted(ids)
        out: list[LedgerEntry] = []
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):  # well under any backend's parameter cap
                q = sa.select(messages).where(messages.c.id.in_(wanted[i : i + 500]))
                out += [_entry(r._mapping) for r in conn.execute(q.order_by(messages.c.id))]
        return out

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

    def mark_loaded(
        self,
        dest_folder: str,
        loaded: Sequence[tuple[int, str | None, frozenset[str] | None]],
    ) -> None:
        """Mark ledger rows ``(row id, destination id, flags the destination was given)``
        ``loaded`` in ``dest_folder``, in one transaction (flags None: not known, e.g. found
        by reconciliation). Clears the error and the verify proof (a new destination id)."""
        if not loaded:
            return
        stmt = (
            messages.update()
            .where(messages.c.id == sa.bindparam("row_id"))
            .values(
                load_state=LoadState.loaded.value,
                dest_folder=dest_folder,
                dest_uid=sa.bindparam("new_dest_uid"),
                dest_flags=sa.bindparam("new_dest_flags"),
                verified_gen=None,  # a new destination id: verify proves it afresh
                error_code=None,
                error_detail=None,
                updated_at=_now(),
            )
        )
        with self.engine.begin() as conn:
            # One compiled statement, executemany: per-row statements cost more than the APPENDs.
            conn.execute(
                stmt,
                [
                    {
                        "row_id": r,
                        "new_dest_uid": u,
                        "new_dest_flags": flags_to_text(f) if f is not None else None,
                    }
                    for r, u, f in loaded
                ],
            )

    def loaded_bytes_since(self, tenant: str, user_key: str, since: datetime) -> int:
        """Bytes of the user's rows that became ``loaded`` at or after ``since``."""
        q = sa.select(sa.func.coalesce(sa.func.sum(messages.c.size), 0)).where(
            messages.c.tenant == tenant,
            messages.c.user_key == user_key,
            messages.c.load_state == LoadState.loaded.value,
            messages.c.updated_at >= since,
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def counts_by_state(self, tenant: str, user_key: str | None = None) -> dict[str, int]:
        q = sa.select(messages.c.load_state, sa.func.count()).where(messages.c.tenant == tenant)
        if user_key is not None:
            q = q.where(messages.c.user_key == user_key)
        with self.engine.connect() as conn:
            return {s: int(n) for s, n in conn.execute(q.group_by(messages.c.load_state))}
