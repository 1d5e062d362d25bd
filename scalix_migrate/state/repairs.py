"""Rows that need a second look: item errors, messages to fetch again, destination flags."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC
from typing import Any

import sqlalchemy as sa

from scalix_migrate.records import (
    LedgerEntry,
    LoadState,
)
from scalix_migrate.state.base import JournalBase
from scalix_migrate.state.rows import ItemProblem
from scalix_migrate.state.schema import (
    _chunks,
    _entry,
    _now,
    flags_from_text,
    flags_to_text,
    messages,
)


class RepairsJournal(JournalBase):
    """Part of :class:`scalix_migrate.state.Journal`."""

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

    def loaded_flag_texts(
        self, tenant: str, user_key: str
    ) -> list[tuple[int, str, str | None, str, str | None]]:
        """``(row id, destination folder, destination id, flags, destination flags)`` of
        every loaded row, flags as stored (sorted JSON text): the cheap pass of flag sync,
        which turns only the rows that need an update into entries (``entries_by_id``)."""
        q = sa.select(
            messages.c.id,
            messages.c.dest_folder,
            messages.c.dest_uid,
            messages.c.flags,
            messages.c.dest_flags,
        ).where(
            messages.c.tenant == tenant,
            messages.c.user_key == user_key,
            messages.c.load_state == LoadState.loaded.value,
            messages.c.dest_folder.is_not(None),
        )
        with self.engine.connect() as conn:
            return [(int(r[0]), r[1], r[2], r[3], r[4]) for r in conn.execute(q)]

    def entries_by_id(self, ids: Sequence[int]) -> list[LedgerEntry]:
        """The ledger rows with these ids, in id order."""
        out: list[LedgerEntry] = []
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(ids)):
                q = sa.select(messages).where(messages.c.id.in_(chunk)).order_by(messages.c.id)
                out += [_entry(r._mapping) for r in conn.execute(q)]
        return out

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
                    values["verified_gen"] = None  # another id: not proven at the destination
                conn.execute(messages.update().where(messages.c.id == row_id).values(**values))

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

    def unfetched_by_folder(
        self, tenant: str, user_key: str
    ) -> dict[tuple[str, int], list[LedgerEntry]]:
        """Rows that failed at extract (no staged bytes: the extract's ``unfetched-``
        placeholder hash), of every folder of the user in one query, by (folder,
        UIDVALIDITY), in UID order: an extract asks once, not once per folder. Rows that
        failed at load carry a real hash and are not returned."""
        q = (
            sa.select(messages)
            .where(
                messages.c.tenant == tenant,
                messages.c.user_key == user_key,
                messages.c.load_state == LoadState.failed.value,
                messages.c.sha256.like("unfetched-%"),  # extract's placeholder
            )
            .order_by(messages.c.folder, messages.c.uidvalidity, messages.c.uid)
        )
        out: dict[tuple[str, int], list[LedgerEntry]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(q).all():
                e = _entry(r._mapping)
                out.setdefault((e.folder, e.uidvalidity), []).append(e)
        return out

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

    def item_errors(self, tenant: str) -> list[ItemProblem]:
        """``failed`` rows: messages that could not be read or written."""
        return self._rows_with_problems(tenant, messages.c.load_state == LoadState.failed.value)

    def skipped_with_reason(self, tenant: str) -> list[ItemProblem]:
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

    def _rows_with_problems(self, tenant: str, which: Any) -> list[ItemProblem]:
        with self.engine.connect() as conn:
            return [
                ItemProblem(**r._mapping)
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
