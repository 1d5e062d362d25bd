"""Preflight findings per run: why a user was left out stays known after the next run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from scalix_migrate.state.base import JournalBase
from scalix_migrate.state.schema import _aware, _now, metadata

preflight_findings = sa.Table(
    "preflight_findings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),  # the flow run's id, or cli-<time>
    sa.Column("run_name", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),  # the finding's place in its run
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("user_key", sa.String(320)),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("remedy", sa.Text, nullable=False),
    sa.Column("accepted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_pf_tenant_at", "tenant", "at"),
)

# The columns of a finding row, in report order.
FINDING_COLUMNS = ["run_id", "run_name", "at", "severity", "code", "user", "message", "remedy"]


class PreflightJournal(JournalBase):
    """Part of :class:`scalix_migrate.state.Journal`."""

    def record_preflight(
        self,
        tenant: str,
        run_id: str,
        rows: Sequence[dict[str, str]],
        *,
        run_name: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Keep one run's findings (rows as ``PreflightReport.to_rows`` makes them)."""
        at = at or _now()
        values = [
            {
                "tenant": tenant,
                "run_id": run_id,
                "run_name": run_name,
                "at": at,
                "seq": i,
                "severity": r["severity"],
                "code": r["code"],
                "user_key": r["user"] or None,
                "message": r["message"],
                "remedy": r["remedy"],
                "accepted": r.get("accepted") == "yes",
            }
            for i, r in enumerate(rows)
        ]
        if not values:
            # A run with no finding is history too ("every check passed").
            values = [
                {
                    "tenant": tenant,
                    "run_id": run_id,
                    "run_name": run_name,
                    "at": at,
                    "seq": 0,
                    "severity": "",
                    "code": "",
                    "user_key": None,
                    "message": "no findings: every check passed",
                    "remedy": "",
                    "accepted": False,
                }
            ]
        with self.engine.begin() as conn:
            conn.execute(preflight_findings.insert(), values)

    def preflight_history(self, tenant: str) -> list[dict[str, Any]]:
        """Every run's findings, newest run first; ``accepted`` as "yes"/""."""
        t = preflight_findings
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.tenant == tenant).order_by(t.c.at.desc(), t.c.seq)
            ).all()
        return [
            {
                "run_id": r.run_id,
                "run_name": r.run_name or "",
                "at": _aware(r.at),
                "severity": r.severity,
                "code": r.code,
                "user": r.user_key or "",
                "message": r.message,
                "remedy": r.remedy,
                "accepted": "yes" if r.accepted else "",
            }
            for r in rows
        ]
