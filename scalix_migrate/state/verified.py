"""What verify proved: per row, the folder generation its bytes were read back in; per
destination folder, the seal of a comparison that found nothing (see verify.py)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa

from scalix_migrate.records import LoadState
from scalix_migrate.state.base import JournalBase
from scalix_migrate.state.rows import FolderSeal, SealRow
from scalix_migrate.state.schema import _aware, _now, flags_from_text, messages, verified_folders


class VerifiedJournal(JournalBase):
    """Part of :class:`scalix_migrate.state.Journal`."""

    def folder_seals(self, tenant: str, user_key: str) -> dict[str, FolderSeal]:
        """Destination folder -> the seal of its last verify that found no difference."""
        t = verified_folders
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.dest_folder, t.c.dest_state, t.c.rows_digest).where(
                    t.c.tenant == tenant, t.c.user_key == user_key
                )
            ).all()
        return {r.dest_folder: FolderSeal(r.dest_state, r.rows_digest) for r in rows}

    def seal_rows(self, tenant: str, user_key: str) -> dict[str, list[SealRow]]:
        """The user's loaded rows by destination folder, in id order, as seals digest them."""
        m = messages
        q = (
            sa.select(m.c.id, m.c.dest_folder, m.c.dest_uid, m.c.sha256, m.c.size, m.c.flags,
                      m.c.internaldate, m.c.verified_gen, m.c.verified_sig)
            .where(
                m.c.tenant == tenant,
                m.c.user_key == user_key,
                m.c.load_state == LoadState.loaded.value,
                m.c.dest_folder.is_not(None),
            )
            .order_by(m.c.id)
        )  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        flag_sets: dict[str, frozenset[str]] = {}  # a mailbox has few distinct flag sets
        out: dict[str, list[SealRow]] = {}
        for r in rows:
            flags = flag_sets.get(r.flags)
            if flags is None:
                flags = flag_sets[r.flags] = flags_from_text(r.flags)
            when = _aware(r.internaldate)
            assert when is not None  # a loaded row has its INTERNALDATE
            out.setdefault(r.dest_folder, []).append(
                SealRow(int(r.id), r.dest_uid, r.sha256, int(r.size), flags,
                        int(when.timestamp()), r.verified_gen is not None, r.verified_sig)
            )  # fmt: skip
        return out

    def record_verification(
        self,
        tenant: str,
        user_key: str,
        *,
        proofs: Mapping[int, str | None],
        seals: Mapping[str, FolderSeal],
        unsealed: Collection[str],
        sigs: Mapping[int, str | None] | None = None,
    ) -> None:
        """In one transaction: per row id the generation its bytes were proved in (None: no
        longer proven) and what its folder's seal found equal (``sigs``), the new seals, and
        the end of the seals of ``unsealed`` folders.

        One transaction, so a seal never stands without the row proofs it was made with."""
        sigs = sigs or {}
        if not (proofs or seals or unsealed or sigs):
            return
        t = verified_folders
        m = messages
        both = proofs.keys() & sigs.keys()
        updates: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
            (
                {"verified_gen": sa.bindparam("gen"), "verified_sig": sa.bindparam("sig")},
                [{"row_id": i, "gen": proofs[i], "sig": sigs[i]} for i in both],
            ),
            (
                {"verified_gen": sa.bindparam("gen")},
                [{"row_id": i, "gen": g} for i, g in proofs.items() if i not in both],
            ),
            (
                {"verified_sig": sa.bindparam("sig")},
                [{"row_id": i, "sig": s} for i, s in sigs.items() if i not in both],
            ),
        ]
        with self.engine.begin() as conn:
            for values, params in updates:
                if params:
                    conn.execute(
                        m.update().where(m.c.id == sa.bindparam("row_id")).values(**values),
                        params,
                    )
            gone = set(unsealed) | set(seals)
            if gone:
                conn.execute(
                    t.delete().where(
                        t.c.tenant == tenant,
                        t.c.user_key == user_key,
                        t.c.dest_folder.in_(sorted(gone)),
                    )
                )
            if seals:
                now = _now()
                conn.execute(
                    t.insert(),
                    [
                        {
                            "tenant": tenant,
                            "user_key": user_key,
                            "dest_folder": folder,
                            "dest_state": seal.dest_state,
                            "rows_digest": seal.rows_digest,
                            "verified_at": now,
                        }
                        for folder, seal in seals.items()
                    ],
                )
