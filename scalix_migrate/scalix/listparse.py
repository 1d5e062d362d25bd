"""Lenient parsing of Scalix LIST responses into :class:`SourceFolder` records.

Scalix decorates LIST with attributes that are not legal IMAP flag atoms, because their values
contain ``=`` (captured from Scalix 12, scalix.md §3.1)::

    (\\X-SpecialFolder=SentItems \\X-DirectRef=00011a035dc33e08 \\X-ModDate=20151029071158
     \\X-Total-Msgs=2 \\X-Unseen-Msgs=0) "/" "Sent Items"
    (X-FolderClass=IPF.Appointment ...) "/" Calendar

Generic parsers either reject them or turn a numeric mailbox name into an int, so we read the
raw untagged LIST data ourselves: the attribute list is split on white space (quoted values
are kept whole), the delimiter is a quoted string or NIL, and the name is a quoted string, an
atom or a literal. Names are decoded from modified UTF-7 once, here, and re-joined with ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from imapclient import imap_utf7

from scalix_migrate.records import SourceFolder, SpecialFolder

#: one raw LIST item as imaplib hands it over: a line, or (line-with-{n}, literal) for a name
#: sent as a literal.
RawListItem = bytes | tuple[bytes, bytes]

_RFC6154 = {
    "\\sent": SpecialFolder.sent,
    "\\trash": SpecialFolder.deleted,
    "\\drafts": SpecialFolder.drafts,
    "\\junk": SpecialFolder.junk,
}
_NOT_SELECTABLE = {"\\noselect", "\\nonexistent"}
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[^\s()]+')
_LITERAL_TAIL = re.compile(rb"\{(\d+)\+?\}$")

#: Scalix's namespace roots for other users' and public folders (scalix.md §0).
DEFAULT_SHARED_ROOTS = ("Other Users", "Public Folders")


class ListParseError(ValueError):
    """A LIST line that cannot be read even leniently; the line is in the message."""


def _unquote(token: bytes) -> bytes:
    if len(token) >= 2 and token[:1] == b'"' and token[-1:] == b'"':
        return re.sub(rb"\\(.)", rb"\1", token[1:-1])
    return token


def split_list_line(item: RawListItem) -> tuple[list[str], str | None, bytes]:
    """Split one LIST item into (attributes, delimiter, raw name bytes)."""
    literal: bytes | None = None
    if isinstance(item, tuple):
        line, literal = item[0].rstrip(), item[1]
        if not _LITERAL_TAIL.search(line):
            raise ListParseError(f"literal without a {{n}} marker: {line!r}")
        line = _LITERAL_TAIL.sub(b"", line).rstrip()
    else:
        line = item.strip()
    if not line.startswith(b"("):
        raise ListParseError(f"LIST line without an attribute list: {line!r}")
    close = line.find(b")")
    if close < 0:
        raise ListParseError(f"LIST line with an unclosed attribute list: {line!r}")
    attrs = [_unquote(t).decode("utf-8", "replace") for t in _TOKEN.findall(line[1:close])]
    rest = line[close + 1 :].strip()
    tokens = _TOKEN.findall(rest)
    if not tokens:
        raise ListParseError(f"LIST line without a delimiter: {line!r}")
    delim_tok = tokens[0]
    raw_delim = b"" if delim_tok.upper() == b"NIL" else _unquote(delim_tok)
    if len(raw_delim) > 1 or not raw_delim.isascii():
        # RFC 3501: one character or NIL. Anything else is not a LIST line we can trust.
        raise ListParseError(f"LIST line with a delimiter that is not one character: {line!r}")
    delimiter = raw_delim.decode("ascii") or None
    if literal is not None:
        name = literal
    elif len(tokens) >= 2:
        # A quoted name may contain spaces: take everything after the delimiter token.
        name_part = rest[rest.find(delim_tok) + len(delim_tok) :].strip()
        name = _unquote(name_part)
    else:
        raise ListParseError(f"LIST line without a mailbox name: {line!r}")
    return attrs, delimiter, name


def _attribute_values(attrs: Iterable[str]) -> dict[str, str]:
    """``\\X-SpecialFolder=SentItems`` -> {"x-specialfolder": "SentItems"} (keys lowercased)."""
    values: dict[str, str] = {}
    for a in attrs:
        if "=" in a:
            key, _, value = a.partition("=")
            values[key.lstrip("\\").lower()] = value
    return values


def _special(attrs: Sequence[str], values: dict[str, str], name: str) -> SpecialFolder | None:
    scalix = values.get("x-specialfolder")
    if scalix is not None:
        for member in SpecialFolder:
            if member.value.lower() == scalix.lower():
                return member
        return None  # SharedRoot, OtherUsersRoot: roots, not roles
    for a in attrs:
        if a.lower() in _RFC6154:
            return _RFC6154[a.lower()]
    # INBOX is reserved by the protocol itself, so its name is its role.
    if name.upper() == "INBOX":
        return SpecialFolder.inbox
    return None


def parse_list_item(item: RawListItem) -> SourceFolder:
    """One raw LIST item -> a decoded :class:`SourceFolder`."""
    attrs, delimiter, raw = split_list_line(item)
    raw_name = raw.decode("utf-8", "replace")
    try:
        decoded = imap_utf7.decode(raw)
    except (ValueError, IndexError) as exc:  # a broken &...- sequence
        raise ListParseError(f"LIST name is not modified UTF-7 ({exc}): {raw!r}") from None
    if delimiter and delimiter != "/":
        decoded = "/".join(decoded.split(delimiter))
    values = _attribute_values(attrs)
    return SourceFolder(
        name=decoded,
        raw_name=raw_name,
        delimiter=delimiter or "/",
        attributes=frozenset(attrs),
        special=_special(attrs, values, decoded),
        folder_class=values.get("x-folderclass"),
        selectable=not any(a.lower() in _NOT_SELECTABLE for a in attrs),
    )


def parse_list_response(
    items: Iterable[RawListItem | None],
    *,
    include_shared: bool = False,
    shared_roots: Sequence[str] = DEFAULT_SHARED_ROOTS,
) -> list[SourceFolder]:
    """Parse every LIST item; leave out shared roots and their children unless asked.

    ``None`` and blank items (imaplib's leftovers around literals) are ignored.
    """
    roots = {r.rstrip("/").lower() for r in shared_roots if r.strip("/")}
    out: list[SourceFolder] = []
    for item in items:
        # imaplib leaves None for an empty answer and the rest of a line after a literal
        # name (usually b"") as an item of its own.
        if item is None or (isinstance(item, bytes) and not item.strip()):
            continue
        folder = parse_list_item(item)
        first = folder.name.split("/", 1)[0].lower()
        scalix_root = {"sharedroot", "otherusersroot"} & {
            v.lower() for v in _attribute_values(folder.attributes).values()
        }
        if not include_shared and (first in roots or scalix_root):
            continue
        out.append(folder)
    return out
