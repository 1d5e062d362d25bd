"""Per-user tallies of the ledger for the reports: counts and bytes, grouped in SQL.

The report (:mod:`scalix_migrate.report`) turns these records into DataFrames; the queries
stay here, with the tables they read.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from scalix_migrate.records import ItemClass, LoadState
from scalix_migrate.state.base import JournalBase
from scalix_migrate.state.schema import folders, messages


@dataclass(frozen=True)
class MessageTally:
    """The user's ledger rows in one load state, split by whether their bytes were staged."""

    user_key: str
    load_state: LoadState
    stored: bool  # False: extract's ``unfetched-`` placeholder, the bytes never arrived
    count: int
    bytes: int


@dataclass(frozen=True)
class ItemClassTally:
    """How many of the user's rows (old-UIDVALIDITY twins not counted) are of one class."""

    user_key: str
    item_class: ItemClass
    count: int


class TalliesJournal(JournalBase):
    """Part of :class:`scalix_migrate.state.Journal`."""

    def message_tallies(self, tenant: str) -> list[MessageTally]:
        """Rows and bytes per (user, load state, staged or not), superseded rows included."""
        stored = sa.not_(messages.c.sha256.like("unfetched-%")).label("stored")
        q = (
            sa.select(
                messages.c.user_key,
                messages.c.load_state,
                stored,
                sa.func.count().label("n"),
                sa.func.sum(messages.c.size).label("bytes"),
            )
            .where(messages.c.tenant == tenant)
            .group_by(messages.c.user_key, messages.c.load_state, stored)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [
            MessageTally(r.user_key, LoadState(r.load_state), bool(r.stored), int(r.n), int(r[4]))
            for r in rows
        ]

    def item_class_tallies(self, tenant: str) -> list[ItemClassTally]:
        """Rows per (user, item class), superseded rows left out."""
        q = (
            sa.select(messages.c.user_key, messages.c.item_class, sa.func.count())
            .where(
                messages.c.tenant == tenant,
                messages.c.load_state != LoadState.superseded.value,
            )
            .group_by(messages.c.user_key, messages.c.item_class)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [ItemClassTally(r[0], ItemClass(r[1]), int(r[2])) for r in rows]

    def folder_counts(self, tenant: str) -> dict[str, int]:
        """User key -> folders the journal knows (users without a folder are absent)."""
        q = (
            sa.select(folders.c.user_key, sa.func.count())
            .where(folders.c.tenant == tenant)
            .group_by(folders.c.user_key)
        )
        with self.engine.connect() as conn:
            return {str(user): int(n) for user, n in conn.execute(q)}
