"""Users: discovery records, status, and claims (one worker per user at a time)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from scalix_migrate.records import ScalixUser
from scalix_migrate.state.base import JournalBase
from scalix_migrate.state.schema import (
    UserRow,
    UserStatus,
    _aware,
    _dead_local_process,
    _now,
    folders,
    messages,
    this_worker,
    users,
)


class UsersJournal(JournalBase):
    """Part of :class:`scalix_migrate.state.Journal`."""

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
                            tenant=tenant, user_key=u.key, status=UserStatus.pending.value, **values
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
                status=UserStatus.pending.value,
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
        status: UserStatus,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        **timestamps: datetime,
    ) -> None:
        """Set the user's status (and its error, cleared when not given).

        ``status`` must be a :class:`UserStatus`: anything else raises ``ValueError`` before
        the journal is touched, so a typo cannot invent a status the reruns never pick up.
        """
        status = UserStatus(status)
        with self.engine.begin() as conn:
            conn.execute(
                users.update()
                .where(
                    users.c.tenant == tenant,
                    users.c.user_key == user_key,
                )
                .values(
                    status=status.value,
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
            m["status"] = UserStatus(m["status"])
            out.append(UserRow(**m))
        return out

    def users_with_status(self, tenant: str, *statuses: UserStatus) -> list[str]:
        """The keys of the tenant's users in any of ``statuses``, sorted."""
        wanted = [UserStatus(s).value for s in statuses]
        with self.engine.connect() as conn:
            return list(
                conn.scalars(
                    sa.select(users.c.user_key)
                    .where(users.c.tenant == tenant, users.c.status.in_(wanted))
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

    def add_user_faults(
        self, tenant: str, user_key: str, *, retries: int = 0, reconnects: int = 0
    ) -> None:
        """Add to the user's counts of retried steps and reopened connections."""
        if not (retries or reconnects):
            return
        with self.engine.begin() as conn:
            conn.execute(
                users.update()
                .where(users.c.tenant == tenant, users.c.user_key == user_key)
                .values(
                    retries=users.c.retries + retries,
                    reconnects=users.c.reconnects + reconnects,
                )
            )

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
