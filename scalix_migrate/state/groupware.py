"""The groupware ledger: one row per calendar/address-book resource (or item that is none).

A resource is keyed by (tenant, user, book, folder, name): ``book`` is ``calendar`` or
``contacts``, ``name`` the stable resource name (from the UID). Writing it is two-phase, like
mail: ``putting`` (with the digest about to be sent and the ETag it replaces, if any) ->
``stored`` (with the server's ETag) -> ``verified`` once read back and compared. A row left
``putting`` by a crash is reconciled by a GET of the name before anything is sent again.
Items that did not become a resource (broken data, only Scalix properties) have a row named
``item-<message hash>`` in state ``failed`` or ``message-only``, so the report can name them.
The mail tables are not touched.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa

from scalix_migrate.state.base import JournalBase
from scalix_migrate.state.schema import _now, metadata

groupware_resources = sa.Table(
    "groupware_resources",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("user_key", sa.String(320), primary_key=True),
    sa.Column("book", sa.String(16), primary_key=True),  # calendar | contacts
    sa.Column("folder", sa.Text, primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # event | task | contact | group | item
    sa.Column("uid", sa.Text),
    sa.Column("digest", sa.String(64)),  # sha256 of the bytes sent (or being sent)
    sa.Column("sources", sa.Text),  # JSON list of staged message hashes
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("etag", sa.Text),  # the server's ETag of what is stored
    sa.Column("replaces_etag", sa.Text),  # while putting an update: the ETag it overwrites
    sa.Column("href", sa.Text),
    sa.Column("error_code", sa.String(16)),
    sa.Column("error_detail", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

PUTTING, STORED, VERIFIED = "putting", "stored", "verified"
FAILED, MESSAGE_ONLY = "failed", "message-only"


@dataclass(frozen=True)
class GroupwareRow:
    book: str
    folder: str
    name: str
    kind: str
    uid: str | None
    digest: str | None
    state: str
    etag: str | None
    replaces_etag: str | None
    href: str | None
    error_code: str | None
    error_detail: str | None


def _row(m: sa.RowMapping) -> GroupwareRow:
    return GroupwareRow(
        book=m["book"],
        folder=m["folder"],
        name=m["name"],
        kind=m["kind"],
        uid=m["uid"],
        digest=m["digest"],
        state=m["state"],
        etag=m["etag"],
        replaces_etag=m["replaces_etag"],
        href=m["href"],
        error_code=m["error_code"],
        error_detail=m["error_detail"],
    )


class GroupwareJournal(JournalBase):
    """Part of :class:`scalix_migrate.state.Journal`."""

    def _gw_where(
        self, tenant: str, user_key: str, book: str, folder: str, name: str
    ) -> sa.ColumnElement[bool]:
        t = groupware_resources.c
        return sa.and_(
            t.tenant == tenant,
            t.user_key == user_key,
            t.book == book,
            t.folder == folder,
            t.name == name,
        )

    def groupware_rows(
        self, tenant: str, user_key: str
    ) -> dict[tuple[str, str, str], GroupwareRow]:
        """Every row of a user, by (book, folder, name)."""
        t = groupware_resources.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(groupware_resources).where(t.tenant == tenant, t.user_key == user_key)
            ).mappings()
            return {(r["book"], r["folder"], r["name"]): _row(r) for r in rows}

    def gw_record(
        self,
        tenant: str,
        user_key: str,
        *,
        book: str,
        folder: str,
        name: str,
        state: str,
        kind: str,
        **values: object,
    ) -> None:
        """Insert or update one row (the unchanged columns stay as they are)."""
        if "sources" in values and not isinstance(values["sources"], str | None):
            values["sources"] = json.dumps(sorted(values["sources"]))  # type: ignore[call-overload]
        values.update(state=state, kind=kind, updated_at=_now())
        where = self._gw_where(tenant, user_key, book, folder, name)
        with self.engine.begin() as conn:
            res = conn.execute(groupware_resources.update().where(where).values(**values))
            if res.rowcount == 0:
                conn.execute(
                    groupware_resources.insert().values(
                        tenant=tenant,
                        user_key=user_key,
                        book=book,
                        folder=folder,
                        name=name,
                        **values,
                    )
                )

    def groupware_failures(self, tenant: str) -> list[tuple[str, GroupwareRow]]:
        """(user, row) of every resource or item in state ``failed``."""
        t = groupware_resources.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(groupware_resources)
                .where(t.tenant == tenant, t.state == FAILED)
                .order_by(t.user_key, t.book, t.folder, t.name)
            ).mappings()
            return [(r["user_key"], _row(r)) for r in rows]

    def groupware_counts(self, tenant: str) -> dict[str, Counter[str]]:
        """Per user: counts of ``<kind>-<state>`` (e.g. ``event-verified``)."""
        t = groupware_resources.c
        out: dict[str, Counter[str]] = {}
        with self.engine.connect() as conn:
            for user_key, kind, state, n in conn.execute(
                sa.select(t.user_key, t.kind, t.state, sa.func.count())
                .where(t.tenant == tenant)
                .group_by(t.user_key, t.kind, t.state)
            ):
                out.setdefault(user_key, Counter())[f"{kind}-{state}"] += int(n)
        return out
