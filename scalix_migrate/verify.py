"""Verify one user: the ledger's loaded messages against what the destination holds.

Per destination folder (every folder the load mapped, and every folder a loaded row names):

* ledger rows are matched to destination messages by the recorded destination id, then by
  SHA-256 (where the destination gives the bytes back: all three sinks here), then by
  Message-ID + size;
* an unmatched ledger row is ``missing``; an unmatched destination message is ``extra``;
* a matched pair whose bytes (or, without bytes, size) differ is ``changed`` (the detail says
  when only the line endings differ, which some servers normalise to CRLF);
* ``flags``: the mapped source flags (:mod:`scalix_migrate.flags`) differ from the
  destination's, ``\\Recent`` ignored;
* ``date``: the INTERNALDATE instants differ (time zones are not compared: servers may keep
  only the instant).

A row's bytes are read back once. When its SHA-256 matched, the row records the destination
folder's generation (IMAP: UIDVALIDITY) in ``verified_gen``; later verifies of that folder,
while it keeps that generation, list the row's destination id without its bytes
(:class:`~scalix_migrate.destinations.base.Proven`: a UID names one immutable message within
a UIDVALIDITY) and compare its size, flags and date. So a rerun of a finished user costs a
metadata FETCH per folder, not a second download of the mailbox. A new destination id (a
re-append, a reconciliation) clears the proof, and so does any difference in bytes or size.

A folder is not listed at all when nothing in it can have changed since a verify that found
it equal: that verify sealed it with the destination's state token
(:meth:`~scalix_migrate.destinations.base.Destination.folder_state`; IMAP with CONDSTORE:
UIDVALIDITY, UIDNEXT, MESSAGES, HIGHESTMODSEQ) and a digest of the ledger rows it compared
(ids, destination ids, hashes, sizes, the mapped flags, dates), every row proven. While
those hold, the comparison is the one that found nothing, so a rerun costs one STATUS per folder.
A sink without such a token (Maildir, mbox, IMAP without CONDSTORE) is listed every time.

When a sealed folder's state moved on (a delta run appended some messages and changed some
flags), only what changed is compared: the destination says which messages it added and which
flags changed since the sealed state, and that none of that state's messages went away
(:meth:`~scalix_migrate.destinations.base.Destination.changes`; IMAP: ``CHANGEDSINCE`` and
the counts), and each row keeps the short digest its folder's seal found equal
(``verified_sig``). Rows whose digest still holds and whose messages did not change are the
same as when the seal found them equal; the rest, and every message added, are compared as
above. Where anything does not add up (a message of the sealed state that no row names any
more, rows sharing a destination id, another UIDVALIDITY), the whole folder is listed.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from scalix_migrate.config import TenantConfig
from scalix_migrate.destinations.base import (
    Destination,
    DestinationMessage,
    Proven,
)
from scalix_migrate.flags import FlagMapper, comparable
from scalix_migrate.records import LedgerEntry, LoadState, ScalixUser
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import FolderSeal, Journal, SealRow
from scalix_migrate.user_context import open_destination

_Pair = tuple[LedgerEntry, DestinationMessage]
DifferenceKind = Literal["missing", "extra", "changed", "flags", "date"]


@dataclass(frozen=True)
class Difference:
    kind: DifferenceKind
    dest_folder: str
    folder: str | None  # source folder, when a ledger row is concerned
    uid: int | None  # source UID
    dest_id: str | None
    detail: str


@dataclass(frozen=True)
class FolderVerification:
    dest_folder: str
    expected: int
    found: int
    missing: int
    extra: int
    changed: int
    flags: int
    dates: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.flags or self.dates)


@dataclass(frozen=True)
class VerifyResult:
    user: str
    folders: tuple[FolderVerification, ...]
    differences: tuple[Difference, ...]

    @property
    def ok(self) -> bool:
        return not self.differences


def verify_user(
    cfg: TenantConfig,
    journal: Journal,
    user: ScalixUser,
    *,
    destination: Callable[[TenantConfig, ScalixUser], Destination] = open_destination,
) -> VerifyResult:
    """Compare every loaded ledger row of ``user`` with the destination."""
    tenant, key = cfg.tenant, user.key
    store = StagingStore(cfg.options.staging_dir, tenant, key)
    # The seals' view of the rows first (light tuples); whole entries only for the folders
    # whose seal does not hold (or for the rows that changed): a rerun of a finished user
    # reads no LedgerEntry at all.
    sealing = journal.seal_rows(tenant, key)
    names = set(sealing) | {
        r.dest_folder for r in journal.folder_rows(tenant, key) if r.dest_folder
    }
    folders: list[FolderVerification] = []
    diffs: list[Difference] = []
    proofs: dict[int, str | None] = {}
    sigs: dict[int, str | None] = {}
    sealed = journal.folder_seals(tenant, key)
    seals: dict[str, FolderSeal] = {}
    still_sealed: set[str] = set()
    with destination(cfg, user) as dest:
        mapper = FlagMapper(cfg.options.flags.map, keywords_allowed=dest.layout.keywords_allowed)
        present = set(dest.list_folders())
        for dest_folder in sorted(names):
            light = sealing.get(dest_folder, [])
            # Read before the listing: a change after it shows as another token next time.
            state = dest.folder_state(dest_folder) if dest_folder in present else None
            digest, now_sigs = _digest_and_sigs(light, mapper)
            seal = sealed.get(dest_folder)
            if state is not None and _unchanged(seal, state, digest, light):
                n = len(light)
                folders.append(FolderVerification(dest_folder, n, n, 0, 0, 0, 0, 0))
                still_sealed.add(dest_folder)
                continue
            part = None
            if state is not None and seal is not None:
                part = _changed_part(dest, dest_folder, seal, state, light, now_sigs)
            if part is not None:
                rows = journal.entries_with_ids(part.row_ids)
                held = list(dest.messages(dest_folder, proven=_proven(rows), ids=part.dest_ids))
                if not part.accounts_for(held):
                    part = None  # a message of the sealed state is not known: list them all
            if part is None:
                # One folder's entries at a time: a verify's memory is its largest folder's.
                rows = list(
                    journal.entries(tenant, key, states=[LoadState.loaded], dest_folder=dest_folder)
                )
                held = (
                    list(dest.messages(dest_folder, proven=_proven(rows)))
                    if dest_folder in present
                    else []
                )
            same_id: set[int] = set()
            found = compare_folder(
                cfg, dest, store, dest_folder, rows, held, key, proofs=proofs, same_id=same_id
            )
            diffs.extend(found)
            if state is not None and not found and _all_proven(rows, proofs):
                seals[dest_folder] = FolderSeal(state, digest)
                stored = {r.id: r.sig for r in light}
                for e in rows:
                    assert e.id is not None  # rows read from the journal
                    new = now_sigs.get(e.id) if e.id in same_id else None
                    if new != stored.get(e.id):
                        sigs[e.id] = new
            kinds = [d.kind for d in found]
            folders.append(
                FolderVerification(
                    dest_folder=dest_folder,
                    expected=len(rows) if part is None else len(light),
                    found=len(held) if part is None else len(held) + len(part.quiet),
                    missing=kinds.count("missing"),
                    extra=kinds.count("extra"),
                    changed=kinds.count("changed"),
                    flags=kinds.count("flags"),
                    dates=kinds.count("date"),
                )
            )
    compared = {f.dest_folder for f in folders} - set(seals) - still_sealed
    journal.record_verification(
        tenant,
        key,
        proofs=proofs,
        seals=seals,
        unsealed=sorted(compared & set(sealed)),
        sigs=sigs,
    )
    return VerifyResult(key, tuple(folders), tuple(diffs))


@dataclass(frozen=True)
class _ChangedPart:
    """What of a sealed folder must be compared again (see :func:`_changed_part`)."""

    row_ids: frozenset[int]  # the rows to compare
    dest_ids: frozenset[str]  # the destination messages to read for them
    quiet: frozenset[str]  # destination ids of the rows left out: unchanged on both sides
    added: frozenset[str]  # ids the destination added since the seal
    kept: int  # messages of the sealed state, all still there

    def accounts_for(self, held: Sequence[DestinationMessage]) -> bool:
        """Every message of the sealed state is a quiet one or one just read: no message the
        ledger no longer names can hide among those left unread."""
        earlier = {m.id for m in held if m.id not in self.added}
        return len(self.quiet) + len(earlier) == self.kept


def _changed_part(
    dest: Destination,
    dest_folder: str,
    seal: FolderSeal,
    state: str,
    light: Sequence[SealRow],
    now_sigs: dict[int, str],
) -> _ChangedPart | None:
    """A sealed folder whose state moved on: compare only what changed since the seal.

    A row still carrying the digest its folder's seal found equal (``sig``), proven, whose
    destination message is neither new nor among those whose flags changed since the seal,
    is the same on both sides as when the seal found it equal: it is left out. Everything
    else is compared, with the destination messages added since. None (list the folder)
    when the destination cannot say what changed or the rows do not name one message each.
    """
    delta = dest.changes(dest_folder, seal.dest_state, state)
    if delta is None:
        return None
    uids = [r.dest_uid for r in light]
    if None in uids or len(set(uids)) != len(uids):
        return None
    same = [r for r in light if r.proven and r.sig is not None and r.sig == now_sigs[r.id]]
    if any(r.dest_uid in delta.added for r in same):
        return None
    quiet = frozenset(
        r.dest_uid for r in same if r.dest_uid is not None and r.dest_uid not in delta.flags_changed
    )
    compare = [r for r in light if r.dest_uid not in quiet]
    read = {r.dest_uid for r in compare if r.dest_uid is not None}
    return _ChangedPart(
        row_ids=frozenset(r.id for r in compare),
        dest_ids=frozenset(read | delta.flags_changed | delta.added),
        quiet=quiet,
        added=delta.added,
        kept=delta.kept,
    )


def _digest_and_sigs(rows: Sequence[SealRow], mapper: FlagMapper) -> tuple[str, dict[int, str]]:
    """A digest of what verify compares of ``rows`` (a change to any row, a new or
    re-appended message, new flags, another mapping of them, gives another digest), and per
    row id a short digest of the same values (what the row's ``verified_sig`` is compared
    with). The rows' proofs are left out (this verify records them after the digest is
    taken): :func:`_unchanged` asks for them apart."""
    h = hashlib.sha256()
    sigs: dict[int, str] = {}
    mapped: dict[frozenset[str], str] = {}
    for r in sorted(rows, key=lambda r: r.id):
        flags = mapped.get(r.flags)
        if flags is None:
            flags = mapped[r.flags] = " ".join(sorted(comparable(mapper(r.flags))))
        line = f"{r.id}\t{r.dest_uid}\t{r.sha256}\t{r.size}\t{flags}\t{r.internaldate_s}\n".encode()
        h.update(line)
        sigs[r.id] = hashlib.sha256(line).hexdigest()[:20]
    return h.hexdigest(), sigs


def _unchanged(seal: FolderSeal | None, state: str, digest: str, rows: Sequence[SealRow]) -> bool:
    """Sealed with this destination state and these rows, every row still proven."""
    return seal is not None and seal == FolderSeal(state, digest) and all(r.proven for r in rows)


def _all_proven(rows: Sequence[LedgerEntry], proofs: dict[int, str | None]) -> bool:
    """Every row has a proof once this verify's ``proofs`` are recorded."""
    return all(e.id is not None and proofs.get(e.id, e.verified_gen) is not None for e in rows)


def _proven(rows: Sequence[LedgerEntry]) -> Proven | None:
    """The destination ids of ``rows`` proven in the folder generation most of them name."""
    gens = Counter(e.verified_gen for e in rows if e.verified_gen and e.dest_uid)
    if not gens:
        return None
    generation = gens.most_common(1)[0][0]
    ids = frozenset(
        e.dest_uid for e in rows if e.verified_gen == generation and e.dest_uid is not None
    )
    return Proven(generation, ids)


def _pair(
    rows: Sequence[LedgerEntry], held: Sequence[DestinationMessage]
) -> tuple[list[_Pair], list[LedgerEntry], list[DestinationMessage]]:
    by_id = {m.id: m for m in held}
    used: set[str] = set()
    pairs: list[_Pair] = []
    left: list[LedgerEntry] = []
    for e in rows:
        m = by_id.get(e.dest_uid) if e.dest_uid is not None else None
        if m is not None and m.id not in used:
            pairs.append((e, m))
            used.add(m.id)
        else:
            left.append(e)
    for key_of_row, key_of_msg in (
        (lambda e: e.sha256, lambda m: m.sha256),
        (
            lambda e: (e.message_id, e.size) if e.message_id else None,
            lambda m: (m.message_id, m.size) if m.message_id else None,
        ),
    ):
        pool: dict[object, list[DestinationMessage]] = defaultdict(list)
        for m in held:
            k = key_of_msg(m)
            if m.id not in used and k is not None:
                pool[k].append(m)
        still: list[LedgerEntry] = []
        for e in left:
            k = key_of_row(e)
            candidates = pool.get(k) if k is not None else None
            if candidates:
                m = candidates.pop(0)
                pairs.append((e, m))
                used.add(m.id)
            else:
                still.append(e)
        left = still
    return pairs, left, [m for m in held if m.id not in used]


def compare_folder(
    cfg: TenantConfig,
    dest: Destination,
    store: StagingStore,
    dest_folder: str,
    rows: Sequence[LedgerEntry],
    held: Iterable[DestinationMessage],
    user_key: str,
    *,
    proofs: dict[int, str | None] | None = None,
    same_id: set[int] | None = None,
) -> list[Difference]:
    """The differences of one folder (see the module docstring). ``proofs`` receives, per
    row id whose proof changes, the generation its bytes were proved in (None: unproven);
    ``same_id`` the ids of the rows matched to the destination message their row names."""
    pairs, missing, extra = _pair(rows, list(held))
    if proofs is not None:
        _record_proofs(pairs, missing, proofs)
    if same_id is not None:
        same_id.update(e.id for e, m in pairs if e.id is not None and m.id == e.dest_uid)
    out = [
        Difference("missing", dest_folder, e.folder, e.uid, e.dest_uid, "not in the destination")
        for e in missing
    ]
    out += [
        Difference("extra", dest_folder, None, None, m.id, f"not in the ledger ({m.size} bytes)")
        for m in extra
    ]
    mapper = FlagMapper(cfg.options.flags.map, keywords_allowed=dest.layout.keywords_allowed)
    for e, m in pairs:
        if m.sha256 is not None and m.sha256 != e.sha256:
            out.append(
                Difference(
                    "changed",
                    dest_folder,
                    e.folder,
                    e.uid,
                    m.id,
                    _how_changed(store, e, m, user_key),
                )
            )
        elif m.sha256 is None and m.size != e.size:
            out.append(
                Difference(
                    "changed", dest_folder, e.folder, e.uid, m.id, f"size {e.size} became {m.size}"
                )
            )
        want = comparable(mapper(e.flags))
        have = comparable(m.flags)
        if want != have:
            out.append(
                Difference(
                    "flags",
                    dest_folder,
                    e.folder,
                    e.uid,
                    m.id,
                    f"expected {sorted(want)}, found {sorted(have)}",
                )
            )
        if m.internaldate is not None and int(m.internaldate.timestamp()) != int(
            e.internaldate.timestamp()
        ):
            out.append(
                Difference(
                    "date",
                    dest_folder,
                    e.folder,
                    e.uid,
                    m.id,
                    f"expected {e.internaldate.isoformat()}, found {m.internaldate.isoformat()}",
                )
            )
    return out


def _how_changed(store: StagingStore, e: LedgerEntry, m: DestinationMessage, key: str) -> str:
    if store.has(e.sha256):
        body = store.get(e.sha256, user=key)
        crlf = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if hashlib.sha256(crlf).hexdigest() == m.sha256:
            return "line endings only: the destination normalised them to CRLF"
    return f"bytes differ (size {e.size} -> {m.size})"


def _record_proofs(
    pairs: Sequence[_Pair], missing: Sequence[LedgerEntry], proofs: dict[int, str | None]
) -> None:
    """Rows whose bytes were just read back equal gain a proof; rows found missing, or with
    other bytes or another size, lose theirs."""
    for e, m in pairs:
        if e.id is None:
            continue
        if m.sha256 is not None:
            proved = m.generation if m.sha256 == e.sha256 else None
        elif m.size != e.size or m.id != e.dest_uid:
            proved = None
        else:
            continue  # listed as proven and still the same size: the proof stands
        if proved != e.verified_gen:
            proofs[e.id] = proved
    for e in missing:
        if e.id is not None and e.verified_gen is not None:
            proofs[e.id] = None
