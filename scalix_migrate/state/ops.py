"""restart-service's changes (to undo) and the log of every remote command."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from scalix_migrate.state.base import JournalBase
from scalix_migrate.state.schema import (
    _now,
    command_log,
    service_changes,
)


class OpsJournal(JournalBase):
    """Part of :class:`scalix_migrate.state.Journal`."""

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
