"""Source flags -> destination flags.

Rules, in order:

1. ``\\Recent`` is dropped (no client can set it).
2. The configured table (``options.flags.map``; by default ``\\X-Forwarded`` -> ``$Forwarded``,
   ``\\X-Has-Attach`` and ``X-Scalix-Processed`` dropped) maps or drops a flag. Backslash flags
   are matched case-insensitively, as IMAP does; keywords exactly.
3. ``\\Seen \\Answered \\Flagged \\Draft`` are kept. ``\\Deleted`` is kept too: a message that
   carries it is only loaded when ``options.messages.skip_deleted`` is false, and then the
   destination shows the same state as the source.
4. Any other backslash flag is dropped (no server accepts unknown system flags).
5. A keyword is kept when the destination allows keywords (PERMANENTFLAGS has ``\\*``) and it
   is a valid IMAP atom; otherwise it is dropped.

Every dropped flag is reported in :attr:`MappedFlags.dropped`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted")
_SYSTEM_BY_LOWER = {f.lower(): f for f in SYSTEM_FLAGS}
# RFC 3501 atom: no ( ) { SP CTL % * " \ ]
_ATOM = re.compile(r'^[^(){ \x00-\x1f\x7f%*"\\\]]+$')


@dataclass(frozen=True)
class MappedFlags:
    flags: frozenset[str]
    dropped: frozenset[str]


def is_deleted(flags: Iterable[str]) -> bool:
    return any(f.lower() == "\\deleted" for f in flags)


def is_valid_keyword(flag: str) -> bool:
    return bool(_ATOM.match(flag)) and flag.isascii()


def map_flags(
    flags: Iterable[str], table: Mapping[str, str | None], *, keywords_allowed: bool
) -> MappedFlags:
    """Apply the rules in the module docstring to one message's flags."""
    lowered_table = {k.lower(): v for k, v in table.items() if k.startswith("\\")}
    kept: set[str] = set()
    dropped: set[str] = set()
    for source in flags:
        flag = source
        if flag.lower() == "\\recent":
            dropped.add(flag)
            continue
        if flag in table or (flag.startswith("\\") and flag.lower() in lowered_table):
            target = table[flag] if flag in table else lowered_table[flag.lower()]
            if target is None:
                dropped.add(flag)
                continue
            flag = target
        if flag.startswith("\\"):
            canonical = _SYSTEM_BY_LOWER.get(flag.lower())
            if canonical is None:
                dropped.add(source)
            else:
                kept.add(canonical)
        elif keywords_allowed and is_valid_keyword(flag):
            kept.add(flag)
        else:
            dropped.add(source)
    return MappedFlags(frozenset(kept), frozenset(dropped))


class FlagMapper:
    """``map_flags(...).flags`` for one table and destination, remembered per flag set: a
    mailbox has a few dozen distinct flag sets and every message asks for one."""

    def __init__(self, table: Mapping[str, str | None], *, keywords_allowed: bool) -> None:
        self.table, self.keywords_allowed = table, keywords_allowed
        self._known: dict[frozenset[str], frozenset[str]] = {}

    def __call__(self, flags: frozenset[str]) -> frozenset[str]:
        mapped = self._known.get(flags)
        if mapped is None:
            mapped = map_flags(flags, self.table, keywords_allowed=self.keywords_allowed).flags
            if len(self._known) < 4096:  # bounded: a pathological mailbox stays small
                self._known[flags] = mapped
        return mapped


def comparable(flags: Iterable[str]) -> frozenset[str]:
    """Flags as compared by verification: ``\\Recent`` ignored, system flags canonical."""
    out = set()
    for f in flags:
        if f.lower() == "\\recent":
            continue
        out.add(_SYSTEM_BY_LOWER.get(f.lower(), f))
    return frozenset(out)
