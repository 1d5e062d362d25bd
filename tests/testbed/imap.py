"""imapclient helpers for the test bed: Scalix-style logins and plain fetches."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from datetime import datetime

from imapclient import IMAPClient

from scalix_migrate.records import FetchedMessage

IMAP_TIMEOUT_S = 15.0
# Dovecot stores these backslash flags; any other "\X-…" flag cannot be APPENDed to it.
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})


def quote(text: str) -> str:
    """An IMAP quoted string (imaplib sends LOGIN's user name as a bare atom)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def storable_flags(flags: list[str]) -> list[str]:
    """Keywords and the standard system flags; Dovecot rejects other backslash flags."""
    return [f for f in flags if not f.startswith("\\") or f in SYSTEM_FLAGS]


@contextlib.contextmanager
def login(port: int, user: str, password: str) -> Iterator[IMAPClient]:
    """A logged-in client on 127.0.0.1:port (plain), logged out on exit."""
    client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=IMAP_TIMEOUT_S, use_uid=True)
    client.normalise_times = False
    try:
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.login(quote(user), password)
        yield client
    finally:
        with contextlib.suppress(OSError, IMAPClient.Error):
            client.logout()
        with contextlib.suppress(OSError):
            client.shutdown()


def fetch_all(client: IMAPClient, folder: str) -> list[FetchedMessage]:
    """Every message of ``folder`` (read-only, BODY.PEEK), in UID order."""
    client.select_folder(folder, readonly=True)
    uids = sorted(client.search("ALL"))
    out: list[FetchedMessage] = []
    if not uids:
        return out
    data = client.fetch(uids, ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "BODY.PEEK[]"])
    for uid in uids:
        item = data[uid]
        internaldate = item[b"INTERNALDATE"]
        assert isinstance(internaldate, datetime)
        out.append(
            FetchedMessage(
                uid=uid,
                # \Recent is per session, not a stored flag.
                flags=frozenset(
                    flag
                    for flag in (
                        f.decode() if isinstance(f, bytes) else str(f) for f in item[b"FLAGS"]
                    )
                    if flag != "\\Recent"
                ),
                internaldate=internaldate,
                size=int(item[b"RFC822.SIZE"]),
                body=bytes(item[b"BODY[]"]),
            )
        )
    return out
