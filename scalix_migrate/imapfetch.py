"""UID FETCH with a fast parser for the answer shapes we ask for; imapclient's parser otherwise.

imapclient's ``parse_fetch_response`` lexes every response byte by byte in Python, and that
was the largest single cost of extract and verify (profiled: about a fifth of both). Our FETCHes
ask only for ``UID``, ``FLAGS``, ``INTERNALDATE``, ``RFC822.SIZE`` and ``BODY[]``, whose answers
have a regular shape that a few regular expressions read at C speed.

Contract: :func:`parse_fetch` returns exactly what ``parse_fetch_response(data, normalise,
uid_is_key)`` returns (keys, value types, ``SEQ``, merging of several answers for one message),
because it only takes the fast path when *every* answer in ``data`` matches the strict grammar
below; anything else (other items, quoted flags, a keyword that imapclient would turn into an
int or None, leading zeros, a second literal, NIL bodies, ...) goes to imapclient unchanged.
:func:`fetch` is ``IMAPClient.fetch`` without modifiers, using :func:`parse_fetch`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.datetime_util import datetime_to_native, parse_to_datetime
from imapclient.fixed_offset import FixedOffset
from imapclient.imapclient import join_message_ids, seq_to_parenstr_upper
from imapclient.response_parser import parse_fetch_response

FetchAnswer = dict[int, dict[bytes, Any]]

_NUM = rb"(0|[1-9][0-9]{0,18})"  # imapclient keeps 0123 as bytes: not on the fast path
_OPEN = re.compile(_NUM + rb" \(")
# One attribute and its value. Flags: atoms only, without the characters imapclient's lexer
# treats specially (``( ) % " [``, controls) or that start a literal (``{``), plus ``]``.
_FLAG = rb"[!#$&'*+,\-./0-9:;<=>?@A-Z\\^_`a-z|~]+"
_ATTR = re.compile(
    rb" ?(?:(UID|RFC822\.SIZE) " + _NUM + rb"(?=[ )])"
    rb"|(FLAGS) \(((?:" + _FLAG + rb"(?: " + _FLAG + rb")*)?)\)"
    rb'|(INTERNALDATE) "([^"\\\x00-\x1f]*)")',
    re.IGNORECASE,
)
_LITERAL = re.compile(rb" ?(BODY\[\]) \{" + _NUM + rb"\}\Z", re.IGNORECASE)
_DIGITS = re.compile(rb"[0-9]+\Z")
_MONTH_NAMES = (
    b"Jan",
    b"Feb",
    b"Mar",
    b"Apr",
    b"May",
    b"Jun",
    b"Jul",
    b"Aug",
    b"Sep",
    b"Oct",
    b"Nov",
    b"Dec",
)
_MONTHS = {name: i for i, name in enumerate(_MONTH_NAMES, start=1)}
# RFC 3501 date-time: day as " 1" or "01"; exact month names; a numeric zone.
_DATE = re.compile(
    rb"( ?[0-9]|[0-9]{2})-(" + b"|".join(_MONTH_NAMES) + rb")-([0-9]{4}) "
    rb"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-][0-9]{4})\Z"
)


def _internaldate(value: bytes, normalise: bool) -> datetime | None:
    """imapclient's ``_convert_INTERNALDATE``: an unparsable date becomes None.

    RFC 3501's own form is read directly (``parsedate_tz`` costs ~40 µs a call); the result
    is built as ``parse_to_datetime`` builds it (a ``FixedOffset`` of float minutes).
    Anything else, and ``-0000`` (which ``parsedate_tz`` reads as "no zone"), goes to it.
    """
    m = _DATE.match(value)
    try:
        if m is None or m.group(7) == b"-0000":
            parsed: datetime = parse_to_datetime(value, normalise=normalise)
            return parsed
        zone = m.group(7)
        seconds = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[:1] == b"-" else 1)
        dt = datetime(
            int(m.group(3)),
            _MONTHS[m.group(2)],
            int(m.group(1)),
            int(m.group(4)),
            int(m.group(5)),
            int(m.group(6)),
            tzinfo=FixedOffset(seconds / 60),
        )
    except ValueError:
        return None
    return datetime_to_native(dt) if normalise else dt


def _attrs(text: bytes, pos: int, out: dict[bytes, Any], normalise: bool) -> int | None:
    """Read attribute pairs from ``pos`` into ``out``; the position after them, or None."""
    while True:
        m = _ATTR.match(text, pos)
        if m is None:
            return pos
        if m.group(1) is not None:
            out[m.group(1).upper()] = int(m.group(2))
        elif m.group(3) is not None:
            flags = tuple(m.group(4).split())
            # imapclient turns an all-digit keyword into an int and NIL into None.
            if any(f.upper() == b"NIL" or _DIGITS.match(f) for f in flags):
                return None
            out[b"FLAGS"] = flags
        else:
            out[b"INTERNALDATE"] = _internaldate(m.group(6), normalise)
        pos = m.end()


def _fast(data: Sequence[Any], normalise: bool, uid_is_key: bool) -> FetchAnswer | None:
    parsed: FetchAnswer = {}
    i = 0
    while i < len(data):
        item = data[i]
        literal: bytes | None = None
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            head, literal = item
            # The trailer must be the closing parenthesis alone (no further items or literals).
            if i + 1 >= len(data) or data[i + 1] != b")":
                return None
            i += 2
        elif isinstance(item, bytes):
            head = item
            i += 1
        else:
            return None
        if not isinstance(head, bytes):
            return None
        m = _OPEN.match(head)
        if m is None:
            return None
        seq = int(m.group(1))
        attrs: dict[bytes, Any] = {}
        pos = _attrs(head, m.end(), attrs, normalise)
        if pos is None:
            return None
        if literal is None:
            if head[pos:] != b")":
                return None
        else:
            lit = _LITERAL.match(head, pos)
            if lit is None or int(lit.group(2)) != len(literal):
                return None
            attrs[b"BODY[]"] = literal
        msg: dict[bytes, Any] = {b"SEQ": seq}
        key = seq
        for name, value in attrs.items():
            if name == b"UID" and uid_is_key:
                key = value
            else:
                msg[name] = value
        parsed.setdefault(key, {}).update(msg)
    return parsed


def parse_fetch(data: list[Any], normalise: bool, uid_is_key: bool) -> FetchAnswer:
    """``parse_fetch_response(data, normalise, uid_is_key)``, fast for our usual shapes."""
    if data == [None]:
        return {}
    fast = _fast(data, normalise, uid_is_key)
    if fast is not None:
        return fast
    return dict(parse_fetch_response(data, normalise, uid_is_key))


def fetch(client: IMAPClient, messages: Sequence[int], items: Sequence[bytes | str]) -> FetchAnswer:
    """``client.fetch(messages, items)`` with :func:`parse_fetch` (same errors, same result)."""
    if not messages:
        return {}
    args = ["FETCH", join_message_ids(messages), seq_to_parenstr_upper(items)]
    if client.use_uid:
        args.insert(0, "UID")
    imap = client._imap
    tag = imap._command(*args)
    typ, data = imap._command_complete("FETCH", tag)
    client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response(typ, data, "FETCH")
    response = parse_fetch(data, client.normalise_times, client.use_uid)
    # Unsolicited answers for other messages are dropped, as imapclient does.
    return {int(m): response[int(m)] for m in messages if int(m) in response}


def quiet_protocol_trace(client: IMAPClient) -> None:
    """Stop imaplib from formatting every line and literal for a DEBUG trace nobody reads.

    imapclient sets ``debug = 5`` on its imaplib connection and routes the trace to the
    ``imapclient.imaplib`` logger. imaplib then builds ``repr()`` of every literal it reads
    (each message body) and ``str()`` of each whole FETCH answer, whether or not the logger
    is enabled: profiled at about a fifth of extract and a third of verify. The trace would
    also put mail content into logs; our own log lines say what was done instead.
    """
    client._imap.debug = 0
