"""A message's identity, the same on every side: its Message-ID and its fingerprint.

Extract records the Message-ID in the ledger; the sinks read it back from what they hold; the
loader asks a sink to ``find`` a message by it after a crash, and verify pairs ledger rows
with destination messages by it. All of them use :func:`message_id_of`, so a folded
Message-ID (a value continued on the next line) is the same string on both sides.

* Message-ID: the first ``Message-ID`` header's value, unfolded, blanks collapsed, or None
  (also when it is empty).
* Fingerprint, for a message without a Message-ID: the SHA-256 of the unfolded Date, From,
  Subject and To header values plus the size.
"""

from __future__ import annotations

import hashlib
import re

_HEADER_END = re.compile(rb"\r?\n\r?\n")
FINGERPRINT_HEADERS = ("date", "from", "subject", "to")


def header_block(body: bytes) -> bytes:
    """The header section of a message (up to the first empty line)."""
    m = _HEADER_END.search(body)
    return body[: m.start()] if m else body


def header_values(block: bytes) -> dict[str, list[bytes]]:
    """Unfolded header values by lower-cased name, in order, whitespace collapsed."""
    out: dict[str, list[bytes]] = {}
    current: list[bytes] | None = None
    for raw in re.split(rb"\r?\n", block):
        if raw[:1] in (b" ", b"\t") and current is not None:
            current[-1] += b" " + raw.strip()
            continue
        name, sep, value = raw.partition(b":")
        if not sep or not name or b" " in name.strip():
            current = None
            continue
        current = out.setdefault(name.strip().decode("ascii", "replace").lower(), [])
        current.append(value.strip())
    return {k: [b" ".join(v.split()) for v in vs] for k, vs in out.items()}


# A Message-ID header line and its continuation lines, as header_values() reads them (a name
# without blanks inside, blanks allowed before the colon; a line starting with a blank continues).
_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def message_id_of(body: bytes) -> str | None:
    """The first Message-ID header value, or None (also when it is empty).

    The same value as ``header_values(header_block(body))["message-id"][0]`` (unfolded,
    blanks collapsed), found with one regular expression instead of parsing every header
    line: verify asks it of every message it reads back."""
    m = _MESSAGE_ID.search(header_block(body))
    if m is None:
        return None
    text = b" ".join(m.group(1).split()).decode("utf-8", "replace").strip()
    return text or None


def fingerprint_of(headers: bytes, size: int) -> str:
    """SHA-256 over Date, From, Subject, To (unfolded) and the size. ``headers`` may be the
    whole message or just its header block."""
    values = header_values(header_block(headers))
    h = hashlib.sha256()
    for name in FINGERPRINT_HEADERS:
        h.update(name.encode() + b"\0" + b"\0".join(values.get(name, [])) + b"\n")
    h.update(str(size).encode())
    return h.hexdigest()
