"""IMAP destination (any server; presets for Dovecot, Gmail and Microsoft 365).

Connection: :func:`scalix_migrate.imapconnect.connect` (implicit TLS, STARTTLS or plain;
explicit connect/read timeouts; ``TCP_NODELAY``: each APPEND otherwise waits for a delayed ACK
on some servers). Login: password (SASL PLAIN where advertised; else LOGIN with quoted or
literal arguments, so names with blanks and non-ASCII passwords work), or XOAUTH2 with a
token from :mod:`scalix_migrate.xoauth2`, fetched again on every reconnect and once when the
server refuses it.

APPEND: bytes untouched, mapped flags and the aware INTERNALDATE. Where MULTIAPPEND is
advertised a batch goes in one command; otherwise one APPEND per message. Either way the
literals are sent without waiting for a continuation when LITERAL+ is advertised (imapclient's
``_raw_command`` does that; its public ``append`` always waits). ``[APPENDUID v uids]`` is parsed
here. A MULTIAPPEND that fails is retried one message at a time to find the bad one.

Responses, classified by response code first and by text only where a server gives no code
(Microsoft's "Suggested Backoff Time"):

* ``[OVERQUOTA]`` / quota text -> :class:`UserError` SXM-DST-003;
* ``[THROTTLED]``, "Suggested Backoff Time: N ms", ``[UNAVAILABLE]``, ``[INUSE]`` -> sleep as
  hinted (capped) and retry, at most ``MAX_ATTEMPTS`` times, then :class:`TransientError`;
* any other NO or BAD to an APPEND (``[TOOBIG]``, ``[LIMIT]``, line too long…) ->
  :class:`ItemError` SXM-DST-004 for that message;
* a dropped connection (BYE, reset, timeout) outside APPEND -> reconnect and retry (bounded);
  during an APPEND -> reconnect and raise :class:`TransientError`, because whether the server
  stored the message is unknown: the loader reconciles those rows before appending again.
"""

from __future__ import annotations

import hashlib
import imaplib
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from imapclient import IMAPClient
from imapclient.datetime_util import datetime_to_INTERNALDATE
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import _literal, seq_to_parenstr

from scalix_migrate import imapconnect
from scalix_migrate.config import ImapDestinationConfig
from scalix_migrate.destinations.base import (
    AppendItem,
    AppendResult,
    DestinationMessage,
    FolderDelta,
    Layout,
    Proven,
    not_there,
)
from scalix_migrate.errors import ItemError, TransientError, UserError
from scalix_migrate.imapfetch import fetch as imap_fetch
from scalix_migrate.imapfetch import parse_fetch
from scalix_migrate.message_identity import fingerprint_of, message_id_of
from scalix_migrate.netfaults import (
    classify,
    describe,
    destination_code,
    note_reconnect,
    plain_text,
)
from scalix_migrate.xoauth2 import TokenSource

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 5
MAX_SLEEP_S = 120.0
FETCH_BATCH_MESSAGES = 100
FETCH_BATCH_BYTES = 16 << 20
STORE_BATCH = 500  # UIDs per STORE: keeps the command line short
# settle(): how long a folder must stay unchanged, how often to look, and the bound.
SETTLE_QUIET_S = 1.0
SETTLE_POLL_S = 0.25
SETTLE_MAX_S = 15.0
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.IGNORECASE)
_BACKOFF_MS = re.compile(rb"Suggested Backoff Time: (\d+) milliseconds", re.IGNORECASE)
_CODE = re.compile(rb"^\[([A-Z-]+)")
_FP_HEADERS = "BODY[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT TO)]"


@dataclass(frozen=True)
class Preset:
    max_message_size: int | None = None
    case_insensitive: bool = False


PRESETS = {
    "generic": Preset(),
    "dovecot": Preset(),
    # APPENDLIMIT Gmail advertises (34 MiB).
    "gmail": Preset(max_message_size=35_651_584),
    # Exchange Online's default receive limit (36 MB); names are case-insensitive there.
    "m365": Preset(max_message_size=36_000_000, case_insensitive=True),
}


class _Throttled(Exception):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s


def _uid_set(text: bytes) -> list[str]:
    out: list[str] = []
    for part in text.split(b","):
        lo, _, hi = part.partition(b":")
        out.extend(str(u) for u in range(int(lo), int(hi or lo) + 1))
    return out


class ImapDestination:
    """One user's mailbox on an IMAP server."""

    def __init__(
        self,
        dest: ImapDestinationConfig,
        *,
        login: str,
        tokens: TokenSource | None,
        user: str | None,
    ) -> None:
        """``login`` (the filled ``login_template``) and ``tokens`` (XOAUTH2 only) come from
        the user's :class:`~scalix_migrate.user_context.UserContext`, which opens the sink."""
        self.dest = dest
        self.user = user
        self.login_name = login
        self.tokens = tokens
        self.preset = PRESETS[dest.preset]
        self.layout = Layout(preset=dest.preset, separator="/")
        self.client: IMAPClient | None = None
        self.multiappend = False
        self.condstore = False
        self._selected: str | None = None
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"ImapDestination({self.dest.host}:{self.dest.effective_port}, {self.login_name})"

    # --- connection -------------------------------------------------------------------------

    def __enter__(self) -> ImapDestination:
        self._connect()
        self.layout = self._discover_layout()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        client, self.client, self._selected = self.client, None, None
        if client is None:
            return
        try:
            client.logout()
        except (IMAPClientError, OSError):
            client.shutdown()

    def _connect(self, *, refresh_token: bool = False) -> None:
        endpoint = imapconnect.Endpoint.destination(self.dest)
        try:
            client = imapconnect.connect(endpoint)
        except (OSError, EOFError, IMAPClientError) as exc:
            fault = classify(exc, connecting=True)
            raise TransientError(
                describe(fault, f"destination {endpoint.where}"),
                code=destination_code(fault),
                user=self.user,
            ) from None
        try:
            self._login(client, refresh_token=refresh_token)
        except BaseException:
            client.shutdown()
            raise
        self.client = client
        caps = {c.upper() for c in client.capabilities()}
        self.multiappend = b"MULTIAPPEND" in caps
        self.condstore = b"CONDSTORE" in caps

    def _login(self, client: IMAPClient, *, refresh_token: bool) -> None:
        try:
            if self.tokens is not None:
                try:
                    client.oauth2_login(self.login_name, self.tokens.token(refresh=refresh_token))
                except LoginError:
                    # An expired token is refused like a wrong one: fetch a fresh one once.
                    client.oauth2_login(self.login_name, self.tokens.token(refresh=True))
                return
            assert self.dest.password is not None
            password = self.dest.password.resolve()
            if client.has_capability("AUTH=PLAIN"):
                client.plain_login(self.login_name, password)  # UTF-8 and blanks alike
                return
            typ, text = imapconnect.login(client, self.login_name, password)
            if typ != "OK":
                raise LoginError(text or typ)
        except LoginError as exc:
            # The server's refusal text never contains the password we sent.
            raise UserError(
                f"the destination refused the login of {self.login_name!r}: {plain_text(exc)}",
                code="SXM-DST-002",
                user=self.user,
            ) from None
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            fault = classify(exc)
            raise TransientError(
                describe(fault, "destination during login"),
                code=destination_code(fault),
                user=self.user,
            ) from None

    def _reconnect(self) -> None:
        self._close()
        self.reconnects += 1
        note_reconnect()
        self._connect(refresh_token=True)

    def _c(self) -> IMAPClient:
        if self.client is None:
            # Only a lost connection is closed before __exit__: this is a reconnect.
            self.reconnects += 1
            note_reconnect()
            self._connect(refresh_token=True)
        assert self.client is not None
        return self.client

    def _retrying(
        self,
        what: str,
        op: Callable[[IMAPClient], T],
        *,
        folder: str | None = None,
        idempotent: bool = True,
    ) -> T:
        """Run ``op`` with backoff on throttling and reconnects on drops (bounded)."""
        delay = 1.0
        code = "SXM-DST-005"  # throttled, unless the last failure was a connection fault
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return op(self._c())
            except _Throttled as t:
                wait, code = t.delay_s, "SXM-DST-005"
            except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
                self._close()
                fault = classify(exc)
                code = destination_code(fault)
                if not idempotent:
                    raise TransientError(
                        describe(fault, f"destination during {what}")
                        + "; the loader reconciles the batch",
                        code=code,
                        user=self.user,
                        folder=folder,
                        retry_after_s=delay,
                    ) from None
                log.warning(
                    "destination %s for %s: %s; reconnecting in %.0f s (attempt %d of %d)",
                    what,
                    self.user,
                    describe(fault, self.dest.host),
                    delay,
                    attempt,
                    MAX_ATTEMPTS,
                )
                wait = delay
            if attempt == MAX_ATTEMPTS or wait > MAX_SLEEP_S:
                break
            time.sleep(wait)
            delay = min(delay * 2, MAX_SLEEP_S)
        raise TransientError(
            f"{what} still throttled or failing after {attempt} attempts",
            code=code,
            user=self.user,
            folder=folder,
            retry_after_s=wait,
        )

    # --- layout ------------------------------------------------------------------------------

    def _discover_layout(self) -> Layout:
        client = self._c()
        prefix, sep = "", "/"
        if client.has_capability("NAMESPACE"):
            personal = client.namespace().personal
            if personal:
                prefix, raw_sep = personal[0]
                sep = raw_sep or "/"
        else:
            listed = client.list_folders("", "")
            if listed and listed[0][1]:
                sep = listed[0][1].decode() if isinstance(listed[0][1], bytes) else listed[0][1]
        special: dict[str, str] = {}
        for flags, _, name in client.list_folders():
            for f in flags:
                text = f.decode() if isinstance(f, bytes) else str(f)
                if text in ("\\Sent", "\\Trash", "\\Drafts", "\\Junk", "\\All", "\\Archive"):
                    special.setdefault(text, name)
        # EXAMINE reports PERMANENTFLAGS () on Dovecot: only SELECT tells what may be stored.
        info = client.select_folder("INBOX")
        permanent = {
            f.decode() if isinstance(f, bytes) else f for f in info.get(b"PERMANENTFLAGS", ())
        }
        limit = self.preset.max_message_size
        for cap in client.capabilities():
            if cap.upper().startswith(b"APPENDLIMIT="):
                limit = int(cap.split(b"=", 1)[1])
        self._selected = None
        return Layout(
            preset=self.dest.preset,
            separator=sep,
            prefix=prefix,
            special_use=special,
            keywords_allowed="\\*" in permanent,
            max_message_size=limit,
            case_insensitive=self.preset.case_insensitive,
        )

    # --- folders -----------------------------------------------------------------------------

    def list_folders(self) -> list[str]:
        listed = self._retrying("LIST", lambda c: c.list_folders())
        return [
            name for flags, _, name in listed if not any(f.lower() == b"\\noselect" for f in flags)
        ]

    def ensure_folder(self, folder: str) -> None:
        def create(c: IMAPClient) -> None:
            if c.folder_exists(folder):
                return
            try:
                c.create_folder(folder)
            except IMAPClientError as exc:
                if not c.folder_exists(folder):
                    raise UserError(
                        f"CREATE refused: {_short(exc)}",
                        code="SXM-DST-007",
                        user=self.user,
                        folder=folder,
                    ) from None

        self._retrying("CREATE", create, folder=folder)

    def _select(self, c: IMAPClient, folder: str) -> None:
        if self._selected != folder:
            c.select_folder(folder)
            self._selected = folder

    # --- append ------------------------------------------------------------------------------

    def append(
        self, folder: str, body: bytes, flags: frozenset[str], internaldate: datetime
    ) -> str | None:
        result = self.append_many(folder, [AppendItem(body, flags, internaldate)])[0]
        if isinstance(result, ItemError):
            raise result
        return result

    def append_many(self, folder: str, items: Sequence[AppendItem]) -> list[AppendResult]:
        if self.multiappend and len(items) > 1:
            try:
                return list(
                    self._retrying(
                        "MULTIAPPEND",
                        lambda c: self._append(c, folder, items),
                        folder=folder,
                        idempotent=False,
                    )
                )
            except ItemError:
                pass  # one message spoilt the atomic batch: isolate it below
        out: list[AppendResult] = []
        for item in items:
            one: list[AppendItem] = [item]
            try:
                out.append(
                    self._retrying(
                        "APPEND",
                        partial(self._append, folder=folder, items=one),
                        folder=folder,
                        idempotent=False,
                    )[0]
                )
            except ItemError as exc:
                out.append(exc)
        return out

    def _append(self, c: IMAPClient, folder: str, items: Sequence[AppendItem]) -> list[str | None]:
        args: list[bytes] = [c._normalise_folder(folder)]
        for item in items:
            args.append(seq_to_parenstr(sorted(item.flags)).encode("ascii"))
            args.append(f'"{datetime_to_INTERNALDATE(item.internaldate)}"'.encode("ascii"))
            args.append(_literal(item.body))
        try:
            typ, data = c._raw_command(b"APPEND", args, uid=False)
        except imaplib.IMAP4.abort:
            # A lost connection (a BYE, an EOF), not a refused message: abort is a subclass
            # of error. The batch may be stored: _retrying hands it to the reconciliation.
            raise
        except imaplib.IMAP4.error as exc:  # BAD
            self._check_throttled(str(exc).encode())
            raise ItemError(
                f"APPEND rejected: {_short(exc)}", code="SXM-DST-004", user=self.user, folder=folder
            ) from None
        text = b" ".join(d for d in data if isinstance(d, bytes))
        if typ != "OK":
            self._classify_no(text, folder)
        m = _APPENDUID.search(text)
        if m is None:
            return [None] * len(items)
        uids = _uid_set(m.group(2))
        return list(uids) if len(uids) == len(items) else [None] * len(items)

    def _check_throttled(self, text: bytes) -> None:
        m = _BACKOFF_MS.search(text)
        code = _CODE.match(text)
        if m is not None:
            raise _Throttled(int(m.group(1)) / 1000.0)
        if code is not None and code.group(1) in (b"THROTTLED", b"UNAVAILABLE", b"INUSE"):
            raise _Throttled(5.0)

    def _classify_no(self, text: bytes, folder: str) -> None:
        self._check_throttled(text)
        code = _CODE.match(text)
        if (code is not None and code.group(1) == b"OVERQUOTA") or b"quota" in text.lower():
            raise UserError(
                "the destination mailbox is over quota",
                code="SXM-DST-003",
                user=self.user,
                folder=folder,
            )
        raise ItemError(
            f"APPEND rejected: {text[:200].decode('utf-8', 'replace')}",
            code="SXM-DST-004",
            user=self.user,
            folder=folder,
        )

    # --- flags ------------------------------------------------------------------------------

    def set_flags(
        self, folder: str, flags_by_id: Mapping[str, frozenset[str]]
    ) -> dict[str, ItemError]:
        """``UID STORE <uids> FLAGS.SILENT (...)``, one command per distinct flag set (at most
        ``STORE_BATCH`` UIDs each), after a ``UID SEARCH`` telling which UIDs still exist."""
        failed: dict[str, ItemError] = {}
        groups: dict[frozenset[str], list[int]] = defaultdict(list)
        for ident, flags in flags_by_id.items():
            if ident.isdigit():
                groups[flags].append(int(ident))
            else:
                failed[ident] = not_there(ident, folder, self.user)
        for flags, uids in groups.items():
            ordered = sorted(uids)
            for i in range(0, len(ordered), STORE_BATCH):
                chunk = ordered[i : i + STORE_BATCH]
                present, refusal = self._retrying(
                    "STORE",
                    partial(self._store, folder=folder, uids=chunk, flags=flags),
                    folder=folder,
                )
                for uid in chunk:
                    if refusal is not None:
                        failed[str(uid)] = refusal
                    elif uid not in present:
                        failed[str(uid)] = not_there(str(uid), folder, self.user)
        return failed

    def _store(
        self, c: IMAPClient, folder: str, uids: list[int], flags: frozenset[str]
    ) -> tuple[set[int], ItemError | None]:
        self._select(c, folder)
        present = set(c.search(["UID", ",".join(str(u) for u in uids)]))
        if not present:
            return present, None
        try:
            c.set_flags(sorted(present), sorted(flags), silent=True)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:  # NO/BAD: e.g. a flag the server does not take
            self._check_throttled(str(exc).encode())
            return present, ItemError(
                f"STORE FLAGS refused: {_short(exc)}",
                code="SXM-DST-004",
                user=self.user,
                folder=folder,
            )
        return present, None

    # --- reconciliation and verification -----------------------------------------------------

    def folder_state(self, folder: str) -> str | None:
        if not self.condstore:
            return None  # without HIGHESTMODSEQ a flag change would not show: list the folder
        items = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES", b"HIGHESTMODSEQ"]

        def status(c: IMAPClient) -> str | None:
            got = c.folder_status(folder, items)
            if any(got.get(k) is None for k in items):
                return None  # e.g. a mailbox without persistent modseqs (NOMODSEQ)
            return " ".join(f"{k.decode()}={int(got[k])}" for k in items)

        return self._retrying("STATUS", status, folder=folder)

    def changes(self, folder: str, since: str, now: str) -> FolderDelta | None:
        """From two STATUS tokens of one UIDVALIDITY: the UIDs at or above the earlier UIDNEXT
        (added), the earlier UIDs whose MODSEQ passed the earlier HIGHESTMODSEQ (RFC 7162
        ``CHANGEDSINCE``: flags changed), and a count that shows whether an earlier message
        went away (no UID below the earlier UIDNEXT can be added, so every earlier message
        is still there exactly when EXISTS less the added ones is the earlier MESSAGES)."""
        old, new = _status_of(since), _status_of(now)
        if not self.condstore or old is None or new is None:
            return None
        if old["UIDVALIDITY"] != new["UIDVALIDITY"]:
            return None
        uidnext, modseq = old["UIDNEXT"], old["HIGHESTMODSEQ"]

        def ask(c: IMAPClient) -> tuple[int, list[int], set[int]]:
            selected = c.select_folder(folder, readonly=True)
            self._selected = None
            if int(selected.get(b"UIDVALIDITY", -1)) != old["UIDVALIDITY"]:
                return -1, [], set()
            exists = int(selected.get(b"EXISTS", 0))
            # "n:*" also names the highest UID when it is below n: keep those >= n.
            added = [u for u in c.search(["UID", f"{uidnext}:*"]) if u >= uidnext]
            changed = self._changed_uids(c, uidnext - 1, modseq) if uidnext > 1 else set()
            return exists, added, changed

        exists, added, changed = self._retrying("FETCH", ask, folder=folder)
        kept = exists - len(added)
        if exists < 0 or kept != old["MESSAGES"]:
            return None  # a message of the earlier state is gone (or the folder is another)
        return FolderDelta(
            added=frozenset(str(u) for u in added),
            flags_changed=frozenset(str(u) for u in changed),
            kept=kept,
        )

    @staticmethod
    def _changed_uids(c: IMAPClient, up_to_uid: int, modseq: int) -> set[int]:
        """UIDs <= ``up_to_uid`` whose MODSEQ is above ``modseq`` (a range, not a UID list:
        the command stays short however large the folder)."""
        imap = c._imap
        tag = imap._command(
            "UID", "FETCH", f"1:{up_to_uid}", "(UID FLAGS)", f"(CHANGEDSINCE {modseq})"
        )
        typ, data = imap._command_complete("FETCH", tag)
        c._checkok("fetch", typ, data)
        typ, data = imap._untagged_response(typ, data, "FETCH")
        response = parse_fetch(data, False, False)  # by sequence number; UID inside
        return {
            int(v[b"UID"]) for v in response.values() if b"UID" in v and int(v[b"UID"]) <= up_to_uid
        }

    def settle(self, folders: Collection[str]) -> None:
        """Wait until the folders' UIDNEXT has not moved for ``SETTLE_QUIET_S`` (at most
        ``SETTLE_MAX_S``): a server finishing the APPEND of a connection that died (ours, a
        moment ago, or a killed run's) stores it after the client has gone, and a search
        before that would not find it."""
        names = sorted(folders)
        if not names:
            return

        def uidnexts(c: IMAPClient) -> list[int]:
            present = {str(f) for _, _, f in c.list_folders()}
            return [
                int(c.folder_status(f, [b"UIDNEXT"])[b"UIDNEXT"]) for f in names if f in present
            ]

        deadline = time.monotonic() + SETTLE_MAX_S
        last = self._retrying("STATUS", uidnexts)
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(SETTLE_POLL_S)
            now = self._retrying("STATUS", uidnexts)
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= SETTLE_QUIET_S:
                return

    def find(
        self,
        folder: str,
        *,
        message_id: str | None,
        size: int,
        fingerprint: str,
        exclude: Collection[str] = (),
    ) -> str | None:
        def search(c: IMAPClient) -> str | None:
            self._select(c, folder)
            if message_id is not None and message_id.isascii():
                uids = c.search(["HEADER", "Message-ID", message_id])
            else:
                # LARGER takes no negative number: a zero-byte message is just SMALLER 1.
                larger = ["LARGER", str(size - 1)] if size > 0 else []
                uids = c.search([*larger, "SMALLER", str(size + 1)])
            if not uids:
                return None
            fetched = c.fetch(uids, ["RFC822.SIZE", _FP_HEADERS.replace("BODY", "BODY.PEEK")])
            for uid in sorted(fetched):
                data: dict[bytes, Any] = fetched[uid]
                if str(uid) in exclude or data.get(b"RFC822.SIZE") != size:
                    continue
                head = data.get(_FP_HEADERS.encode()) or b""
                if message_id is not None and message_id_of(head) == message_id:
                    return str(uid)
                if message_id is None and fingerprint_of(head, size) == fingerprint:
                    return str(uid)
            return None

        return self._retrying("SEARCH", search, folder=folder)

    def messages(
        self,
        folder: str,
        *,
        proven: Proven | None = None,
        ids: Collection[str] | None = None,
    ) -> Iterator[DestinationMessage]:
        def meta(c: IMAPClient) -> tuple[str, dict[int, dict[bytes, Any]]]:
            selected = c.select_folder(folder, readonly=True)
            self._selected = None
            # With ``ids``: a UID that does not exist is simply not answered.
            wanted = None if ids is None else sorted(int(i) for i in ids if i.isdigit())
            uids = c.search("ALL") if wanted is None else wanted
            out: dict[int, dict[bytes, Any]] = {}
            for i in range(0, len(uids), 500):
                out.update(
                    imap_fetch(c, uids[i : i + 500], ["RFC822.SIZE", "FLAGS", "INTERNALDATE"])
                )
            return str(selected.get(b"UIDVALIDITY", "")), out

        generation, info = self._retrying("FETCH", meta, folder=folder)
        # UIDs are immutable within one UIDVALIDITY (RFC 3501 2.3.1.1): a proven UID still
        # names the bytes verify read before.
        skip = proven.ids if proven is not None and proven.generation == generation else ()
        batch: list[int] = []
        size = 0
        for uid in sorted(info):
            if str(uid) in skip:
                yield self._described(uid, info[uid], generation, None)
                continue
            batch.append(uid)
            size += int(info[uid].get(b"RFC822.SIZE", 0))
            if len(batch) >= FETCH_BATCH_MESSAGES or size >= FETCH_BATCH_BYTES:
                yield from self._bodies(folder, batch, info, generation)
                batch, size = [], 0
        if batch:
            yield from self._bodies(folder, batch, info, generation)

    def _bodies(
        self, folder: str, uids: list[int], info: dict[int, dict[bytes, Any]], generation: str
    ) -> Iterator[DestinationMessage]:
        def fetch(c: IMAPClient) -> dict[int, dict[bytes, Any]]:
            c.select_folder(folder, readonly=True)
            return imap_fetch(c, uids, ["BODY.PEEK[]"])

        bodies = self._retrying("FETCH", fetch, folder=folder)
        for uid in uids:
            body = bodies.get(uid, {}).get(b"BODY[]")
            if body is None:
                continue  # expunged meanwhile
            yield self._described(uid, info[uid], generation, body)

    @staticmethod
    def _described(
        uid: int, meta: dict[bytes, Any], generation: str, body: bytes | None
    ) -> DestinationMessage:
        flags = frozenset(
            f.decode() if isinstance(f, bytes) else str(f) for f in meta.get(b"FLAGS", ())
        )
        return DestinationMessage(
            id=str(uid),
            size=len(body) if body is not None else int(meta.get(b"RFC822.SIZE", 0)),
            sha256=hashlib.sha256(body).hexdigest() if body is not None else None,
            flags=flags,
            internaldate=meta.get(b"INTERNALDATE"),
            message_id=message_id_of(body) if body is not None else None,
            generation=generation,
        )


def _status_of(token: str) -> dict[str, int] | None:
    """The numbers of a :meth:`ImapDestination.folder_state` token, or None if it is not one."""
    try:
        got = {k: int(v) for k, v in (part.split("=", 1) for part in token.split())}
    except ValueError:
        return None
    wanted = ("UIDVALIDITY", "UIDNEXT", "MESSAGES", "HIGHESTMODSEQ")
    return got if all(k in got for k in wanted) else None


def _short(exc: BaseException) -> str:
    return plain_text(exc)[:200]  # the server's words, not a bytes repr
