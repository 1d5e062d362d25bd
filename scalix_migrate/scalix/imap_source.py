"""``ScalixMailbox``: one user's Scalix mailbox, read-only, over IMAP.

The adapter logs in as the tenant's admin on the user's behalf with Scalix's own form
``LOGIN "mboxadmin:<admin>:<target>" "<admin password>"`` (scalix.md §2.2), lists folders with
Scalix's attributes (:mod:`scalix_migrate.scalix.listparse`), opens folders with EXAMINE and
fetches with ``BODY.PEEK[]``: the source never changes, ``\\Seen`` included.

Everything leaving this module is normalised: :class:`SourceFolder`, :class:`MessageInfo`,
:class:`FetchedMessage` (UIDs int, flags frozensets of str, aware INTERNALDATEs) or
:class:`FetchFailure` for a message the server would not return.

Errors: a refused login is :class:`UserError` ``SXM-IMAP-002``; network trouble is
:class:`TransientError` coded by what happened (:mod:`scalix_migrate.netfaults`): nothing
answered or refused ``SXM-IMAP-001``, a working connection dropped (reset, EOF, BYE)
``SXM-IMAP-007``, a read timeout ``SXM-IMAP-008``, a failed TLS handshake ``SXM-IMAP-009``; a
certificate that does not verify is :class:`FatalError` ``SXM-IMAP-003`` (it is the same for
every user); a folder that cannot be examined is :class:`ItemError` ``SXM-IMAP-005``.
"""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from imapclient import IMAPClient
from imapclient import exceptions as imap_exc

from scalix_migrate import imapconnect
from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import FatalError, ItemError, TransientError, UserError
from scalix_migrate.imapfetch import fetch as imap_fetch
from scalix_migrate.imapfetch import parse_fetch
from scalix_migrate.netfaults import classify, describe, source_code
from scalix_migrate.records import FetchedMessage, ScalixUser, SourceFolder
from scalix_migrate.scalix.listparse import DEFAULT_SHARED_ROOTS, parse_list_response

log = logging.getLogger(__name__)

_META = [b"UID", b"RFC822.SIZE", b"FLAGS", b"INTERNALDATE"]
_FULL = [*_META, b"BODY.PEEK[]"]
#: metadata FETCHes are chunked too: 20,000 UIDs in one command line is fine for the server,
#: but the parsed answer should stay small.
META_CHUNK = 1000


@dataclass(frozen=True)
class MessageInfo:
    """What the source says about a message before its body is read."""

    uid: int
    size: int
    flags: frozenset[str]
    internaldate: datetime  # aware


@dataclass(frozen=True)
class FetchFailure:
    """A message the server would not return; ``reason`` is the server's text or ours."""

    uid: int
    size: int
    reason: str


def _text(data: Sequence[object]) -> str:
    return b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")


def _aware(value: datetime) -> datetime:
    """imapclient's FixedOffset -> datetime.timezone (plain, picklable, comparable)."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"INTERNALDATE without a zone: {value!r}")
    return value.replace(tzinfo=timezone(offset))


def _decode_flags(flags: Iterable[bytes | str]) -> frozenset[str]:
    # \Recent belongs to the session, not the message, and no server accepts it on APPEND.
    decoded = (f.decode("utf-8", "replace") if isinstance(f, bytes) else f for f in flags)
    return frozenset(f for f in decoded if f.lower() != "\\recent")


def _batches(infos: Sequence[MessageInfo], max_count: int, max_bytes: int) -> Iterator[list[int]]:
    """UID groups bounded by count and summed RFC822.SIZE (a big message goes alone)."""
    group: list[int] = []
    total = 0
    for info in infos:
        if group and (len(group) >= max_count or total + info.size > max_bytes):
            yield group
            group, total = [], 0
        group.append(info.uid)
        total += info.size
    if group:
        yield group


class ScalixMailbox:
    """A context manager over one IMAP connection to one user's mailbox (read-only).

    ``login`` is the mboxadmin login name, ``mboxadmin:<admin>:<target>``: the user's
    :class:`~scalix_migrate.user_context.UserContext` gives it (and opens the mailbox).
    """

    def __init__(self, cfg: TenantConfig, user: ScalixUser, *, login: str) -> None:
        self.cfg = cfg
        self.user = user
        self.login = login
        self._client: IMAPClient | None = None
        self._current: SourceFolder | None = None
        self._shared_roots: tuple[str, ...] = DEFAULT_SHARED_ROOTS
        self._condstore = False
        #: HIGHESTMODSEQ of the folder last examined, where the server keeps CONDSTORE
        self.modseq: int | None = None

    def __repr__(self) -> str:
        return f"ScalixMailbox(user={self.user.key!r}, host={self.cfg.source.imap_host!r})"

    # --- lifetime ---------------------------------------------------------------------

    def __enter__(self) -> ScalixMailbox:
        self._client = self._connect()
        try:
            self._login(self._client)
            self._read_namespaces()
            self._enable_condstore()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except (imap_exc.IMAPClientError, OSError) as err:
            # The connection may already be gone (that is often why we are closing).
            log.debug("logout from %s failed: %s", self.cfg.source.imap_host, type(err).__name__)
            try:
                client.shutdown()
            except OSError:
                log.debug("socket shutdown failed; already closed")

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            raise RuntimeError("ScalixMailbox used outside its with-block")
        return self._client

    @contextmanager
    def _guard(
        self, *, folder: str | None = None, uid: int | None = None, connecting: bool = False
    ) -> Iterator[None]:
        """Turn network failures into TransientError coded by what happened (refused, lost,
        timed out, TLS), certificate failures into FatalError (the same for every user)."""
        imap = self.cfg.source.imap
        try:
            yield
        except (
            imap_exc.IMAPClientAbortError,
            imaplib.IMAP4.abort,
            OSError,
            EOFError,
        ) as err:
            fault = classify(err, connecting=connecting)
            where = f"source IMAP {self.cfg.source.imap_host}:{imap.effective_port}"
            if fault.kind == "tls-verify":
                raise FatalError(
                    f"the certificate of {self.cfg.source.imap_host} does not verify "
                    f"({fault.detail})",
                    code="SXM-IMAP-003",
                ) from None
            raise TransientError(
                describe(fault, where),
                code=source_code(fault),
                user=self.user.key,
                folder=folder,
                uid=uid,
            ) from err

    def _connect(self) -> IMAPClient:
        with self._guard(connecting=True):
            client = imapconnect.connect(imapconnect.Endpoint.source(self.cfg))
        # Raw mUTF-7 names go to the server exactly as it listed them.
        client.folder_encode = False
        return client

    def _login(self, client: IMAPClient) -> None:
        password = self.cfg.source.admin_password.resolve()
        with self._guard():
            typ, text = imapconnect.login(client, self.login, password)
        if typ != "OK":
            raise UserError(
                f"Scalix refused the mboxadmin login {self.login!r} for "
                f"{self.user.display_name}: {typ} {text}",
                code="SXM-IMAP-002",
                user=self.user.key,
            )

    def _enable_condstore(self) -> None:
        """Ask for CONDSTORE (RFC 7162) where the server has it and ENABLE: EXAMINE then
        reports HIGHESTMODSEQ, and a rerun asks only for the flags changed since. Scalix's own
        support is unknown (peers.md): without it every rerun reads every flag, as before."""
        client = self.client
        with self._guard():
            if client.has_capability("CONDSTORE") and client.has_capability("ENABLE"):
                enabled = client.enable("CONDSTORE")
                self._condstore = any(
                    (e.decode() if isinstance(e, bytes) else str(e)).upper() == "CONDSTORE"
                    for e in enabled
                )

    def _read_namespaces(self) -> None:
        client = self.client
        with self._guard():
            if not client.has_capability("NAMESPACE"):
                return
            ns = client.namespace()
        roots = [str(prefix) for group in (ns.other, ns.shared) for prefix, _ in (group or ())]
        self._shared_roots = tuple({*DEFAULT_SHARED_ROOTS, *(r for r in roots if r.strip("/"))})

    # --- folders ----------------------------------------------------------------------

    def list_folders(self) -> list[SourceFolder]:
        """Every folder of the mailbox (shared roots left out unless configured)."""
        with self._guard():
            typ, data = self.client._imap.list('""', '"*"')
        if typ != "OK":
            raise UserError(f"LIST failed: {_text(data)}", code="SXM-IMAP-005", user=self.user.key)
        return parse_list_response(
            data,
            include_shared=self.cfg.source.imap.include_shared_folders,
            shared_roots=self._shared_roots,
        )

    def examine(self, folder: SourceFolder) -> tuple[int, int]:
        """Open ``folder`` read-only; return (UIDVALIDITY, EXISTS)."""
        with self._guard(folder=folder.name):
            try:
                info = self.client.select_folder(folder.raw_name, readonly=True)
            except imap_exc.IMAPClientAbortError:
                raise
            except imap_exc.IMAPClientError as err:
                raise ItemError(
                    f"EXAMINE refused: {err}",
                    code="SXM-IMAP-005",
                    user=self.user.key,
                    folder=folder.name,
                ) from None
        self._current = folder
        modseq = info.get(b"HIGHESTMODSEQ") if self._condstore else None
        self.modseq = int(modseq) if modseq else None  # [NOMODSEQ]: a folder without them
        return int(info[b"UIDVALIDITY"]), int(info.get(b"EXISTS", 0))

    def _require(self, folder: SourceFolder) -> None:
        if self._current is None or self._current.name != folder.name:
            self.examine(folder)

    # --- messages ---------------------------------------------------------------------

    def uids_above(self, folder: SourceFolder, uid: int) -> list[int]:
        """UIDs greater than ``uid``, ascending (``n:*`` also matches the last one: filtered)."""
        self._require(folder)
        with self._guard(folder=folder.name):
            found = self.client.search(["UID", f"{uid + 1}:*"])
        return sorted(int(u) for u in found if int(u) > uid)

    def _fetch_raw(self, uids: Sequence[int], items: list[bytes], folder: str) -> dict[int, Any]:
        with self._guard(folder=folder):
            response = imap_fetch(self.client, list(uids), items)
        wanted = set(uids)
        # imapclient keys answers by UID; unsolicited FETCH responses (flag updates from other
        # sessions) carry only FLAGS and are ignored.
        return {int(k): v for k, v in response.items() if int(k) in wanted and b"RFC822.SIZE" in v}

    def message_info(self, folder: SourceFolder, uids: Sequence[int]) -> Iterator[MessageInfo]:
        """Size, flags and INTERNALDATE of ``uids``, in chunks of META_CHUNK."""
        self._require(folder)
        for start in range(0, len(uids), META_CHUNK):
            chunk = uids[start : start + META_CHUNK]
            raw = self._fetch_raw(chunk, _META, folder.name)
            for uid in chunk:
                item = raw.get(uid)
                if item is None:
                    continue  # expunged since the SEARCH
                yield MessageInfo(
                    uid=uid,
                    size=int(item.get(b"RFC822.SIZE", 0)),
                    flags=_decode_flags(item.get(b"FLAGS", ())),
                    internaldate=_aware(item[b"INTERNALDATE"]),
                )

    def flags(
        self, folder: SourceFolder, up_to_uid: int, *, changed_since: int | None = None
    ) -> dict[int, frozenset[str]]:
        """Current flags of every message with UID <= ``up_to_uid`` (for the delta refresh);
        with ``changed_since`` (a MODSEQ, CONDSTORE only) just of those changed after it."""
        self._require(folder)
        if up_to_uid < 1:
            return {}
        # imapclient's fetch() only takes UID lists; a range keeps the command short.
        imap = self.client._imap
        args = ["UID", "FETCH", f"1:{up_to_uid}", "(UID FLAGS)"]
        if changed_since is not None:
            args.append(f"(CHANGEDSINCE {changed_since})")
        with self._guard(folder=folder.name):
            tag = imap._command(*args)
            typ, data = imap._command_complete("FETCH", tag)
            if typ != "OK":
                raise ItemError(
                    f"UID FETCH FLAGS refused: {_text(data)}",
                    code="SXM-IMAP-005",
                    user=self.user.key,
                    folder=folder.name,
                )
            typ, data = imap._untagged_response(typ, data, "FETCH")
        # Keyed by sequence number: answers without a UID are unsolicited and dropped.
        response = parse_fetch(data, False, False)
        return {
            int(v[b"UID"]): _decode_flags(v.get(b"FLAGS", ()))
            for v in response.values()
            if b"UID" in v and int(v[b"UID"]) <= up_to_uid
        }

    def fetch(
        self, folder: SourceFolder, infos: Sequence[MessageInfo]
    ) -> Iterator[list[FetchedMessage | FetchFailure]]:
        """Bodies of ``infos`` in batches bounded by ``fetch_batch_messages``/``_bytes``.

        Each yielded list keeps the order of ``infos``. A message the server does not return
        (missing from the answer, or NO for it alone) comes back as a :class:`FetchFailure`.
        """
        self._require(folder)
        imap = self.cfg.source.imap
        by_uid = {i.uid: i for i in infos}
        for group in _batches(infos, imap.fetch_batch_messages, imap.fetch_batch_bytes):
            yield self._fetch_group(folder, [by_uid[u] for u in group])

    def _fetch_group(
        self, folder: SourceFolder, infos: list[MessageInfo]
    ) -> list[FetchedMessage | FetchFailure]:
        try:
            raw = self._fetch_raw([i.uid for i in infos], _FULL, folder.name)
        except imap_exc.IMAPClientAbortError:
            raise
        except imap_exc.IMAPClientError as err:
            if len(infos) > 1:
                # One bad message must not sink its batch: ask again one by one.
                return [r for i in infos for r in self._fetch_group(folder, [i])]
            return [FetchFailure(infos[0].uid, infos[0].size, f"server said: {err}")]
        out: list[FetchedMessage | FetchFailure] = []
        for info in infos:
            item = raw.get(info.uid)
            body = item.get(b"BODY[]") if item is not None else None
            if item is None or not isinstance(body, bytes):
                out.append(FetchFailure(info.uid, info.size, "the server returned no body"))
                continue
            out.append(
                FetchedMessage(
                    uid=info.uid,
                    flags=_decode_flags(item.get(b"FLAGS", ())),
                    internaldate=_aware(item.get(b"INTERNALDATE", info.internaldate)),
                    size=len(body),
                    body=body,
                )
            )
        return out
