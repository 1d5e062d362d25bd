"""restart-service's changes (to undo) and the log of every remote command."""

from __future__ import annotations

import sqlalchemy as sa

from scalix_migrate.state.base import JournalBase
from scalix_migrate.state.rows import CommandRecord, ServiceChange
from scalix_migrate.state.schema import (
    _aware,
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

    def pending_undos(self, tenant: str) -> list[ServiceChange]:
        """Changes not yet undone, newest first (undo in reverse order)."""
        with self.engine.connect() as conn:
            return [
                ServiceChange(
                    id=int(r.id),
                    tenant=r.tenant,
                    kind=r.kind,
                    target=r.target,
                    undo_command=r.undo_command,
                    done_at=_aware(r.done_at) or r.done_at,
                    undone_at=_aware(r.undone_at),
                )
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

    def commands(self, tenant: str) -> list[CommandRecord]:
        """Every logged remote command of the tenant, in the order they ran."""
        with self.engine.connect() as conn:
            return [
                CommandRecord(
                    id=int(r.id),
                    tenant=r.tenant,
                    at=_aware(r.at) or r.at,
                    host=r.host,
                    command=r.command,
                    exit_status=r.exit_status,
                    duration_s=r.duration_s,
                )
                for r in conn.execute(
                    sa.select(command_log)
                    .where(command_log.c.tenant == tenant)
                    .order_by(command_log.c.id)
                )
            ]
