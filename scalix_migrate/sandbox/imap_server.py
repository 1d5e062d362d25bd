"""A Scalix-flavoured IMAP server on pymap's in-memory backend, run in a background thread.

What it adds to pymap 0.36.7 (the extension points are pymap's ``LoginInterface``,
``IdentityInterface``, the dict backend's ``Session`` and ``IMAPConfig``):

* **Login** through :meth:`Directory.authenticate`: a user's own credentials or Scalix's
  ``mboxadmin:<admin>:<target>`` with the admin's password. The directory file is re-read on
  every login, so ``ommodu`` changes (capabilities, locks) apply at once. A refusal answers
  ``NO LOGIN failure, user name or password rejected`` (Scalix's text, no response code); a
  login while the directory's ``IMAP Server`` service is off answers ``NO [UNAVAILABLE] …``.
* **CAPABILITY** includes ``X-SCALIX-1``; the greeting names no host (no DNS lookup).
* **LIST** carries Scalix's attributes as captured (reference/scalix.md §3.1):
  ``\\X-SpecialFolder=SentItems``, ``\\X-FolderClass=IPF.Appointment``, ``\\X-DirectRef=<hex>``,
  ``\\X-Total-Msgs=N``, ``\\X-Unseen-Msgs=N``, plus pymap's ``\\HasChildren``/``\\HasNoChildren``.
  ``Other Users`` and ``Public Folders`` are listed as ``\\Noselect`` roots. Separator ``/``.
* Each Scalix user owns one in-memory mailbox set, created on first use; a user without a
  message store logs in to an empty mailbox (INBOX only). Messages are seeded in-process with
  their bytes, flags (any flag, including ``\\X-Forwarded``) and INTERNALDATE.

Not emulated: ``NAMESPACE`` and ``X-SCALIX-ID`` (pymap has no hook for new commands without
forking its command table), login referrals.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from argparse import Namespace
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from proxyprotocol.reader import ProxyProtocolReader
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import Session as DictSession
from pymap.backend.dict.filter import FilterSet
from pymap.backend.dict.mailbox import MailboxSet
from pymap.exceptions import InvalidAuth, NotAllowedError, UserNotFound
from pymap.imap import IMAPServer
from pymap.interfaces.login import IdentityInterface, LoginInterface
from pymap.interfaces.token import TokensInterface
from pymap.listtree import ListTree
from pymap.parsing.message import AppendMessage
from pymap.parsing.response import ResponseCode, ResponseNo
from pymap.parsing.specials.flag import Flag
from pymap.selected import SelectedMailbox
from pymap.token import AllTokens
from pymap.user import UserMetadata
from pysasl.creds.server import ServerCredentials
from pysasl.hashing import BuiltinHash

from scalix_migrate.sandbox.directory import (
    Directory,
    DirectoryUser,
    FolderSpec,
    SeedMessage,
    locked_directory,
)

LOGIN_FAILURE = "LOGIN failure, user name or password rejected"
SHARED_ROOTS = ("Other Users", "Public Folders")
_T = TypeVar("_T")


class _LoginRefused(InvalidAuth):
    """Scalix's refusal: plain ``NO`` with its text, no AUTHENTICATIONFAILED code."""

    def __init__(self) -> None:
        super().__init__(LOGIN_FAILURE)

    def get_response(self, tag: bytes) -> ResponseNo:
        return ResponseNo(tag, LOGIN_FAILURE.encode())


class _Unavailable(InvalidAuth):
    def __init__(self) -> None:
        super().__init__("IMAP service is not running")

    def get_response(self, tag: bytes) -> ResponseNo:
        return ResponseNo(tag, self._raw, ResponseCode.of(b"UNAVAILABLE"))


class _ScalixFlag(Flag):
    """Keeps the spelling of non-RFC backslash flags (``\\X-Forwarded``, ``\\X-Has-Attach``).

    pymap capitalises every backslash flag (``\\X-forwarded``); Scalix sends them as seeded.
    RFC 3501 system flags are still normalised, so pymap's ``\\Seen`` logic keeps working.
    """

    _RFC = frozenset(
        {b"\\seen", b"\\answered", b"\\flagged", b"\\deleted", b"\\draft", b"\\recent"}
    )

    @classmethod
    def _capitalize(cls, value: bytes) -> bytes:
        if value.startswith(b"\\") and value.lower() not in cls._RFC:
            return value
        return super()._capitalize(value)


def store_key(user: DirectoryUser) -> str:
    """The key of a user's mailbox set: ``display name/mailnode``, lowercased."""
    return user.name.lower()


def _direct_ref(key: str, folder: str) -> str:
    return hashlib.sha256(f"{key}\0{folder}".encode()).hexdigest()[:16]


class _Config(DictConfig):
    @property
    def initial_capability(self) -> Sequence[bytes]:
        return [*super().initial_capability, b"X-SCALIX-1"]

    @property
    def greeting(self) -> bytes:
        return b"Scalix IMAP server (sandbox) ready"


class _Stores:
    """Every user's mailbox set and folder attributes; lives on the server's event loop."""

    def __init__(self, config: _Config) -> None:
        self.config = config
        self.sets: dict[str, tuple[MailboxSet, FilterSet]] = {}
        self.folder_attrs: dict[str, dict[str, list[bytes]]] = {}

    def get(self, key: str) -> tuple[MailboxSet, FilterSet]:
        if key not in self.sets:
            self.sets[key] = (MailboxSet(), FilterSet())
            self.folder_attrs[key] = {}
        return self.sets[key]

    async def create_folders(self, key: str, folders: Iterable[FolderSpec]) -> None:
        mailbox_set, _ = self.get(key)
        attrs = self.folder_attrs[key]
        existing = {e.name for e in (await mailbox_set.list_mailboxes()).list() if e.exists}
        for spec in folders:
            parts = spec.name.split("/")
            # Scalix folders are real at every level: create the parents too (pymap would
            # otherwise list them as \Noselect placeholders).
            for depth in range(1, len(parts) + 1):
                name = "/".join(parts[:depth])
                if name.upper() != "INBOX" and name not in existing:
                    await mailbox_set.add_mailbox(name)
                    existing.add(name)
            extra = []
            if spec.special:
                extra.append(f"X-SpecialFolder={spec.special}".encode())
            if spec.folder_class:
                extra.append(f"X-FolderClass={spec.folder_class}".encode())
            attrs["INBOX" if spec.name.upper() == "INBOX" else spec.name] = extra

    async def append(self, key: str, messages: Iterable[SeedMessage]) -> None:
        mailbox_set, _ = self.get(key)
        for msg in messages:
            mbx = await mailbox_set.get_mailbox(msg.folder)
            flags = frozenset(_ScalixFlag(f.encode()) for f in msg.flags)
            await mbx.append(AppendMessage(msg.body, msg.internaldate, flags), recent=False)


class _Session(DictSession):
    """Adds Scalix's LIST attributes and the ``\\Noselect`` shared roots."""

    def __init__(self, owner: str, stores: _Stores) -> None:
        mailbox_set, filter_set = stores.get(owner)
        super().__init__(owner, stores.config, mailbox_set, filter_set)
        self._stores = stores

    async def list_mailboxes(
        self,
        ref_name: str,
        filter_: str,
        subscribed: bool = False,
        selected: SelectedMailbox | None = None,
    ) -> tuple[Iterable[tuple[str, str | None, Sequence[bytes]]], SelectedMailbox | None]:
        entries, selected = await super().list_mailboxes(ref_name, filter_, subscribed, selected)
        if not filter_:
            return entries, selected
        attrs = self._stores.folder_attrs.get(self.owner, {})
        out: list[tuple[str, str | None, Sequence[bytes]]] = []
        for name, delimiter, base in entries:
            extra = list(attrs.get(name, []))
            if b"Noselect" not in base:
                snapshot = await (await self.mailbox_set.get_mailbox(name)).snapshot()
                extra += [
                    f"X-DirectRef={_direct_ref(self.owner, name)}".encode(),
                    f"X-Total-Msgs={snapshot.exists}".encode(),
                    f"X-Unseen-Msgs={snapshot.unseen}".encode(),
                ]
            out.append((name, delimiter, [*extra, *base]))
        if not subscribed:
            roots = ListTree("/").update(*SHARED_ROOTS)
            out += [
                (e.name, "/", [b"Noselect", b"HasNoChildren"])
                for e in roots.list_matching(ref_name, filter_)
            ]
        return out, selected


class _SecretProbe:
    """A pysasl identity that accepts anything and keeps the secret it was shown.

    pysasl's credentials expose the password only through ``verify(identity)``; the directory,
    not pysasl, decides whether it is right.
    """

    def __init__(self) -> None:
        self.secret: str | None = None

    @property
    def authcid(self) -> str:
        return ""

    def get_clear_secret(self) -> str | None:
        return None

    def compare_authcid(self, authcid: str) -> bool:
        return True

    def compare_secret(self, secret: str) -> bool:
        self.secret = secret
        return True


class _Identity(IdentityInterface):
    def __init__(self, key: str, stores: _Stores, *, login: str) -> None:
        self._key = key
        self._stores = stores
        self.login = login

    @property
    def name(self) -> str:
        return self._key

    @property
    def roles(self) -> frozenset[str]:
        return frozenset()

    @asynccontextmanager
    async def new_session(self) -> AsyncIterator[_Session]:
        yield _Session(self._key, self._stores)

    async def new_token(self, *, expiration: datetime | None = None) -> str | None:
        return None

    async def get(self) -> UserMetadata:
        raise UserNotFound(self._key)

    async def set(self, metadata: UserMetadata) -> int | None:
        raise NotAllowedError("The sandbox directory is managed by the admin commands.")

    async def delete(self) -> None:
        raise NotAllowedError("The sandbox directory is managed by the admin commands.")


class _Login(LoginInterface):
    def __init__(self, config: _Config, stores: _Stores, directory_path: Path) -> None:
        self._tokens = AllTokens(config)
        self._stores = stores
        self._directory_path = directory_path

    @property
    def tokens(self) -> TokensInterface:
        return self._tokens

    async def authenticate(self, credentials: ServerCredentials) -> _Identity:
        probe = _SecretProbe()
        credentials.verify(probe)
        secret = probe.secret
        if secret is None:
            raise _LoginRefused()
        # A thread, so that a writer holding the directory lock never blocks the event loop.
        user, imap_up = await asyncio.to_thread(self._check, credentials.authcid, secret)
        if user is None:
            raise _LoginRefused()
        if not imap_up:
            raise _Unavailable()
        return _Identity(store_key(user), self._stores, login=credentials.authcid)

    def _check(self, login: str, password: str) -> tuple[DirectoryUser | None, bool]:
        with locked_directory(self._directory_path, write=False) as directory:
            up = directory.services.get("IMAP Server", "Enabled") in ("Enabled", "Started")
            return directory.authenticate(login, password), up

    async def authorize(self, authenticated: IdentityInterface, authzid: str) -> IdentityInterface:
        # LOGIN's authorization identity is its user name; SASL's must name the same mailbox.
        login = authenticated.login if isinstance(authenticated, _Identity) else ""
        if authzid and authzid != login and authzid.lower() != authenticated.name:
            directory = await asyncio.to_thread(Directory.load, self._directory_path)
            target = directory.find(authzid)
            if target is None or store_key(target) != authenticated.name:
                raise _LoginRefused()
        return authenticated


class SandboxImapServer:
    """pymap on an asyncio loop in a daemon thread, listening on ``127.0.0.1:<port>``.

    ``start()`` binds a free port (or ``port``) and returns it; ``stop()`` closes the listener
    and the loop. ``add_mailbox``/``append`` seed a user's store from any thread.
    """

    def __init__(self, directory_path: Path, *, port: int = 0) -> None:
        self._directory_path = Path(directory_path)
        self._requested_port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="imap")
        self._stack = AsyncExitStack()
        self._stores: _Stores | None = None
        self.port = 0

    def start(self, timeout_s: float = 15.0) -> int:
        self._thread.start()
        self.port = self._call(self._start(), timeout_s)
        return self.port

    async def _start(self) -> int:
        args = Namespace(passlib_cfg=None, proxy_protocol=None, inherited_sockets=None)
        config = _Config(
            args,
            host="127.0.0.1",
            port=self._requested_port,
            demo_data=False,
            demo_user="",
            demo_password="",
            tls_enabled=False,
            reject_dnsbl=False,
            invalid_user_sleep=0.0,
            hash_context=BuiltinHash(),
        )
        config.apply_context()
        self._stores = _Stores(config)
        login = _Login(config, self._stores, self._directory_path)
        callback = ProxyProtocolReader(config.proxy_protocol).get_callback(
            IMAPServer(login, config)
        )
        server = await asyncio.start_server(callback, host="127.0.0.1", port=self._requested_port)
        await self._stack.enter_async_context(server)
        await server.start_serving()
        port: int = server.sockets[0].getsockname()[1]
        return port

    def add_mailbox(self, user: DirectoryUser, timeout_s: float = 30.0) -> None:
        """Create the user's store with ``user.folders`` (INBOX always exists)."""
        self._call(self._require().create_folders(store_key(user), user.folders), timeout_s)

    def append(
        self, user: DirectoryUser, messages: Iterable[SeedMessage], timeout_s: float = 120.0
    ) -> None:
        """Append messages (bytes, flags, INTERNALDATE as given) to the user's folders."""
        self._call(self._require().append(store_key(user), list(messages)), timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown(), timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        self._loop.close()

    async def _shutdown(self) -> None:
        await self._stack.aclose()
        # Close the open connections too: their tasks would outlive the loop otherwise.
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _require(self) -> _Stores:
        if self._stores is None:
            raise RuntimeError("the IMAP server is not started")
        return self._stores

    def _call(self, coro: Coroutine[Any, Any, _T], timeout_s: float) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)
