"""Semantic comparison of iCalendar/vCard text: what was sent against what the server stores.

DAV servers do not keep bytes: Radicale re-serialises through vobject (other line folding,
property order, multi-valued ``RDATE`` split into lines), others add or replace ``PRODID``,
``DTSTAMP`` or ``REV``. :func:`semantic_form` reduces a text to a multiset of
``(component path, NAME, sorted parameters, value)`` after unfolding lines, upper-casing names
and parameter names, splitting list values, dropping the properties servers rewrite
(:data:`REWRITTEN`), and keeping only the ``TZID`` of a ``VTIMEZONE``. Two resources are the
same when their forms are equal; :func:`differences` names what differs (property names and
component paths only: never a value, which may be private).
"""

from __future__ import annotations

import re
from collections import Counter

from icalendar.parser import Contentline

#: Properties a server may set or replace on its own: they say nothing about the item.
REWRITTEN = frozenset({"PRODID", "DTSTAMP", "REV", "X-RADICALE-NAME"})
#: Properties whose comma-separated values are a set (RFC 5545 §3.8.5 / §3.8.1.2).
_LISTS = frozenset({"RDATE", "EXDATE", "CATEGORIES", "RESOURCES"})
_SPLIT = re.compile(r"(?<!\\),")

Entry = tuple[str, str, tuple[tuple[str, str], ...], str]


def _unfold(text: str) -> list[str]:
    return [ln for ln in re.sub(r"\r?\n[ \t]", "", text).splitlines() if ln.strip()]


def semantic_form(data: bytes) -> Counter[Entry]:
    """The comparable content of an iCalendar or vCard text (see the module doc)."""
    text = data.decode("utf-8", errors="replace")
    path: list[str] = []
    form: Counter[Entry] = Counter()
    for line in _unfold(text):
        try:
            name, params, value = Contentline(line).parts()  # type: ignore[no-untyped-call]
        except ValueError:
            form[("/".join(path), "?", (), line)] += 1  # kept as text: still compared
            continue
        name = name.upper()
        if name == "BEGIN":
            path.append(value.upper())
            continue
        if name == "END":
            if path:
                path.pop()
            continue
        if name in REWRITTEN:
            continue
        if "VTIMEZONE" in path and name != "TZID":
            # A zone is known by its TZID; servers replace its rules with their own (Radicale
            # keeps one RDATE of a list, some servers drop VTIMEZONE for timezones by
            # reference, RFC 7809), and the events keep naming the zone.
            continue
        plist = tuple(
            sorted(
                (k.upper(), ",".join(v) if isinstance(v, list) else str(v))
                for k, v in params.items()
            )
        )
        where = "/".join(path)
        values = _SPLIT.split(value) if name in _LISTS else [value]
        for v in values:
            form[(where, name, plist, v)] += 1
    return form


def differences(sent: bytes, stored: bytes) -> list[str]:
    """What differs, as ``"missing VEVENT SUMMARY"`` / ``"extra VCARD NOTE"`` (no values)."""
    a, b = semantic_form(sent), semantic_form(stored)
    out = [f"missing {where or '-'} {name}" for (where, name, _, _) in (a - b)]
    out += [f"extra {where or '-'} {name}" for (where, name, _, _) in (b - a)]
    return sorted(set(out))
