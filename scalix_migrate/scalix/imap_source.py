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
import socket
import ssl
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient import exceptions as imap_exc

from scalix_migrate.config import TenantConfig, TLSMode
from scalix_migrate.errors import FatalError, ItemError, TransientError, UserError
from scalix_migrate.imapfetch import fetch as imap_fetch
from scalix_migrate.imapfetch import parse_fetch, quiet_protocol_trace
from scalix_migrate.netfaults import classify, describe, plain_text, source_code
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


def login_name(cfg: TenantConfig, user: ScalixUser) -> str:
    """``mboxadmin:<admin>:<target>`` with the target identity chosen by ``login_identity``.

    Falls back to the primary address, then the display name, when the chosen identity is
    unknown for this user.
    """
    choice = cfg.source.imap.login_identity
    by_choice = {
        "email": user.primary_address,
        "auth_id": user.auth_id,
        "display_name": user.display_name,
    }
    target = by_choice[choice] or user.primary_address or user.display_name
    return f"mboxadmin:{cfg.source.admin_user}:{target}"


def _astring(value: str) -> tuple[bytes, bytes | None]:
    """IMAP quoted string for plain ASCII, else a literal: (text before, literal bytes)."""
    raw = value.encode("utf-8")
    if raw.isascii() and not any(c in raw for c in b"\r\n\x00"):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"', None
    return b"", raw


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
    """A context manager over one IMAP connection to one user's mailbox (read-only)."""

    def __init__(self, cfg: TenantConfig, user: ScalixUser) -> None:
        self.cfg = cfg
        self.user = user
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

    def _ssl_context(self) -> ssl.SSLContext:
        imap = self.cfg.source.imap
        ctx = ssl.create_default_context(cafile=str(imap.ca_file) if imap.ca_file else None)
        if not imap.verify_certificate:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _connect(self) -> IMAPClient:
        imap = self.cfg.source.imap
        host = self.cfg.source.imap_host
        timeout = SocketTimeout(connect=min(30.0, imap.timeout_s), read=imap.timeout_s)
        with self._guard(connecting=True):
            client = IMAPClient(
                host,
                port=imap.effective_port,
                use_uid=True,
                ssl=imap.tls is TLSMode.implicit,
                ssl_context=self._ssl_context() if imap.tls is TLSMode.implicit else None,
                timeout=timeout,
            )
            try:
                # Every FETCH is one request/response; Nagle only adds latency (testbed.md).
                client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if imap.tls is TLSMode.starttls:
                    client.starttls(self._ssl_context())
            except BaseException:
                client.shutdown()
                raise
        quiet_protocol_trace(client)
        # Raw mUTF-7 names go to the server exactly as it listed them.
        client.folder_encode = False
        client.normalise_times = False
        return client

    def _send_login(self, client: IMAPClient, name: str, password: str) -> tuple[str, str]:
        """Send LOGIN with both arguments quoted or as literals; never logged.

        imapclient's ``login()`` sends the user name unquoted, and Scalix names contain
        spaces and colons, so we talk to imaplib's connection directly.
        """
        imap = client._imap
        literal_plus = client.has_capability("LITERAL+")
        tag = imap._new_tag()
        line = tag + b" LOGIN"
        for arg in (name, password):
            quoted, literal = _astring(arg)
            if literal is None:
                line += b" " + quoted
                continue
            if literal_plus:
                line += b" {%d+}\r\n" % len(literal) + literal
                continue
            imap.send(line + b" {%d}\r\n" % len(literal))
            while imap._get_response():  # returns None on the continuation request
                if imap.tagged_commands.get(tag):
                    # Refused before the literal was sent (e.g. BAD): that is the answer.
                    typ, data = imap.tagged_commands.pop(tag)
                    return typ, _text(data)
            line = literal
        imap.send(line + b"\r\n")
        typ, data = imap._command_complete("LOGIN", tag)
        return typ, _text(data)

    def _login(self, client: IMAPClient) -> None:
        name = login_name(self.cfg, self.user)
        password = self.cfg.source.admin_password.resolve()
        with self._guard():
            try:
                typ, text = self._send_login(client, name, password)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as err:  # BAD
                typ, text = "BAD", plain_text(err)
        if typ != "OK":
            raise UserError(
                f"Scalix refused the mboxadmin login {name!r} for {self.user.display_name}: "
                f"{typ} {text}",
                code="SXM-IMAP-002",
                user=self.user.key,
            )
        client._imap.state = "AUTH"
        client._cached_capabilities = None  # capabilities may change after LOGIN

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
