"""Staged groupware items -> calendar and address-book resources, one per UID.

A Scalix item arrives as a message whose ``text/calendar`` part holds appointments or tasks
and whose vCard part holds a contact (scalix.md §3.3). :func:`build_resources` turns the items
of one folder into :class:`Resource` records, one per iCalendar ``UID`` (a recurring event's
master and its ``RECURRENCE-ID`` exceptions become one resource, even when Scalix stored them as
separate items) and one per vCard. What a CalDAV server requires and Scalix may not give is
added, never guessed at: ``METHOD`` is removed (RFC 4791 §4.1 forbids it in stored resources),
a ``VTIMEZONE`` is added for a ``TZID`` that has none when the name is a known zone (IANA or
Windows), and an item without a UID gets one derived from its content. Floating times,
all-day dates and unknown ``TZID`` values are copied as they are.

Resource names are stable: the UID itself when it is a safe file name, else a hash of it, so a
rerun and a crash reconciliation find the same name. The bytes are deterministic, so their
hash tells a delta what changed. Data that does not parse is an :class:`ItemIssue` naming the
item (folder and message hash), never an exception.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

import icalendar
import vobject

from scalix_migrate.groupware import groupware_parts

PRODID = "-//scalix-migrate//groupware//EN"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._+-]{0,99}")
_COMPONENT_KIND = {"VEVENT": "event", "VTODO": "task"}


class ResourceKind(StrEnum):
    event = "event"
    task = "task"
    contact = "contact"
    group = "group"  # a distribution list, as a vCard group

    @property
    def is_calendar(self) -> bool:
        return self in (ResourceKind.event, ResourceKind.task)


@dataclass(frozen=True)
class StagedItem:
    """One staged groupware message's groupware parts (not the whole message: a folder's
    items are held together, and their attachments are not needed here)."""

    folder: str
    sha256: str
    calendar: bytes | None
    vcard: bytes | None
    has_properties: bool
    scalix_class: str  # X-Scalix-Class, lowercased ("" when absent)
    order: int = 0  # newer items higher (the source UID): the newer wins a tie

    @classmethod
    def of_message(cls, folder: str, sha256: str, body: bytes, order: int = 0) -> StagedItem:
        calendar, vcard, has_properties = groupware_parts(body)
        return cls(folder, sha256, calendar, vcard, has_properties, _scalix_class(body), order)


@dataclass(frozen=True)
class Resource:
    """One calendar object or vCard as it is sent to the server."""

    kind: ResourceKind
    folder: str  # the Scalix folder: one collection per folder
    name: str  # the resource's file name in its collection, e.g. "<uid>.ics"
    uid: str
    data: bytes
    sources: tuple[str, ...]  # hashes of the staged messages it came from

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def content_type(self) -> str:
        if self.kind.is_calendar:
            return "text/calendar; charset=utf-8"
        return "text/vcard; charset=utf-8"


@dataclass(frozen=True)
class ItemIssue:
    """An item that did not become a resource: ``code`` says why (for the report)."""

    folder: str
    sha256: str
    code: str  # SXM-GW-001 broken data, SXM-GW-002 only Scalix properties, SXM-GW-003 empty
    detail: str


@dataclass
class FolderResources:
    resources: list[Resource] = field(default_factory=list)
    issues: list[ItemIssue] = field(default_factory=list)


def resource_name(uid: str, extension: str) -> str:
    """A stable, URL-safe file name for a UID (the UID itself when it is safe)."""
    if _SAFE_NAME.fullmatch(uid) and not uid.endswith(extension):
        return uid + extension
    return "sxm-" + hashlib.sha256(uid.encode("utf-8")).hexdigest()[:40] + extension


def _derived_uid(payload: bytes) -> str:
    return "sxm-" + hashlib.sha256(payload).hexdigest()[:40]


def _scalix_class(body: bytes) -> str:
    end = body.find(b"\r\n\r\n")
    head = body if end < 0 else body[: end + 4]
    msg = email.message_from_bytes(head, policy=email.policy.compat32)
    return str(msg.get("X-Scalix-Class", "")).strip().lower()


def build_resources(items: Iterable[StagedItem]) -> FolderResources:
    """The resources of one folder's items (any order in; a deterministic order out)."""
    out = FolderResources()
    events: dict[str, list[tuple[str, icalendar.Component]]] = {}
    zones: dict[str, icalendar.Timezone] = {}
    folder = ""
    for item in sorted(items, key=lambda i: (i.order, i.sha256)):
        folder = item.folder
        if item.calendar is not None:
            _collect_calendar(item, item.calendar, events, zones, out)
        elif item.vcard is not None:
            _collect_vcards(item, item.vcard, out)
        elif item.has_properties:
            out.issues.append(
                ItemIssue(
                    item.folder,
                    item.sha256,
                    "SXM-GW-002",
                    "only Scalix's properties part: migrated as a message only",
                )
            )
        else:
            out.issues.append(
                ItemIssue(item.folder, item.sha256, "SXM-GW-003", "no calendar or vCard part")
            )
    for uid in sorted(events):
        out.resources.append(_calendar_resource(folder, uid, events[uid], zones))
    # The same contact twice (same UID: filed twice, or edited) is one resource: the newest.
    by_name: dict[str, Resource] = {}
    for r in out.resources:
        before = by_name.get(r.name)
        sources = tuple(sorted({*r.sources, *(before.sources if before else ())}))
        by_name[r.name] = replace(r, sources=sources)
    out.resources = [by_name[n] for n in sorted(by_name)]
    return out


# --- iCalendar ---------------------------------------------------------------------------


def _broken(item: StagedItem, what: str) -> ItemIssue:
    return ItemIssue(item.folder, item.sha256, "SXM-GW-001", what)


def _collect_calendar(
    item: StagedItem,
    data: bytes,
    events: dict[str, list[tuple[str, icalendar.Component]]],
    zones: dict[str, icalendar.Timezone],
    out: FolderResources,
) -> None:
    try:
        cal = icalendar.Calendar.from_ical(data)
    except ValueError as exc:
        out.issues.append(_broken(item, f"iCalendar does not parse ({_short(exc)})"))
        return
    if not isinstance(cal, icalendar.Calendar):
        out.issues.append(_broken(item, "the calendar part is not one VCALENDAR"))
        return
    components = [c for c in cal.subcomponents if c.name in _COMPONENT_KIND]
    bad = [
        f"{c.name} {name}: {text}"
        for c in [cal, *cal.walk()]
        for name, text in getattr(c, "errors", [])
    ]
    if bad:
        out.issues.append(_broken(item, "iCalendar values do not parse: " + "; ".join(bad[:3])))
        return
    if not components:
        out.issues.append(_broken(item, "the calendar part has no VEVENT or VTODO"))
        return
    for tz in cal.walk("VTIMEZONE"):
        if isinstance(tz, icalendar.Timezone):
            zones.setdefault(str(tz.get("TZID")), tz)
    for comp in components:
        uid = str(comp.get("UID", "")).strip()
        if not uid:
            uid = _derived_uid(comp.to_ical())
            comp["UID"] = uid
        events.setdefault(uid, []).append((item.sha256, comp))


def _recurrence_key(comp: icalendar.Component) -> str:
    rid = comp.get("RECURRENCE-ID")
    return "" if rid is None else rid.to_ical().decode()


def _revision(comp: icalendar.Component) -> tuple[int, str]:
    # When Scalix gave the same instance twice, the later revision wins (SEQUENCE, then stamp;
    # on a tie the newer item, as items arrive oldest first).
    seq = int(comp.get("SEQUENCE", 0) or 0)
    stamp = comp.get("LAST-MODIFIED") or comp.get("DTSTAMP")
    return seq, "" if stamp is None else stamp.to_ical().decode()


def _calendar_resource(
    folder: str,
    uid: str,
    parts: list[tuple[str, icalendar.Component]],
    zones: dict[str, icalendar.Timezone],
) -> Resource:
    chosen: dict[str, tuple[str, icalendar.Component]] = {}
    for sha, comp in parts:
        key = _recurrence_key(comp)
        if key not in chosen or _revision(comp) >= _revision(chosen[key][1]):
            chosen[key] = (sha, comp)
    cal = icalendar.Calendar()
    cal.add("PRODID", PRODID)
    cal.add("VERSION", "2.0")
    ordered = [chosen[k] for k in sorted(chosen)]  # the master ("") first, then exceptions
    tzids = sorted({tzid for _, comp in ordered for tzid in _tzids(comp)})
    for tzid in tzids:
        if tzid in zones:
            cal.add_component(zones[tzid])
    for _, comp in ordered:
        cal.add_component(comp)
    # Zones the item names but does not define: added when the name is a known zone.
    cal.add_missing_timezones()
    kind = ResourceKind(_COMPONENT_KIND[str(ordered[0][1].name)])
    return Resource(
        kind=kind,
        folder=folder,
        name=resource_name(uid, ".ics"),
        uid=uid,
        data=cal.to_ical(),
        sources=tuple(sorted({sha for sha, _ in ordered})),
    )


def _tzids(comp: icalendar.Component) -> set[str]:
    found: set[str] = set()
    for sub in comp.walk():
        for value in sub.values():
            for v in value if isinstance(value, list) else [value]:
                params = getattr(v, "params", None)
                if params and "TZID" in params:
                    found.add(str(params["TZID"]))
    return found


# --- vCard -------------------------------------------------------------------------------

_VCARD_BLOCK = re.compile(r"^BEGIN:VCARD\r?\n.*?^END:VCARD[ \t]*\r?$", re.M | re.S | re.I)


def _collect_vcards(item: StagedItem, data: bytes, out: FolderResources) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # vCard 2.1 exports in a legacy charset
    blocks = [m.group(0) for m in _VCARD_BLOCK.finditer(text)]
    if not blocks:
        out.issues.append(_broken(item, "the vCard part has no BEGIN:VCARD ... END:VCARD"))
        return
    is_list = item.scalix_class.startswith("ipm.distlist")
    for block in blocks:
        try:
            card = vobject.readOne(block)
        except Exception as exc:  # vobject raises ParseError and also bare ValueErrors
            out.issues.append(_broken(item, f"vCard does not parse ({_short(exc)})"))
            return
        out.resources.append(_vcard_resource(item, block, card, is_list=is_list))


def _vcard_resource(item: StagedItem, block: str, card: object, *, is_list: bool) -> Resource:
    lines = re.split(r"\r?\n", block.strip())
    body, end = lines[:-1], lines[-1]
    uid_obj = getattr(card, "uid", None)
    uid = str(uid_obj.value).strip() if uid_obj is not None else ""
    added: list[str] = []
    if not uid:
        uid = _derived_uid(block.encode("utf-8"))
        added.append(f"UID:{uid}")
    version = str(getattr(getattr(card, "version", None), "value", "3.0"))
    names = {ln.split(":", 1)[0].split(";", 1)[0].upper() for ln in body if ":" in ln}
    group = is_list or any(
        ln.upper().startswith(("KIND:GROUP", "X-ADDRESSBOOKSERVER-KIND:GROUP")) for ln in body
    )
    if group:
        added.extend(_group_lines(body, names, version))
    data = "\r\n".join([*body, *added, end]) + "\r\n"
    return Resource(
        kind=ResourceKind.group if group else ResourceKind.contact,
        folder=item.folder,
        name=resource_name(uid, ".vcf"),
        uid=uid,
        data=data.encode("utf-8"),
        sources=(item.sha256,),
    )


def _group_lines(body: list[str], names: set[str], version: str) -> list[str]:
    """Mark a distribution list as a group the way its vCard version does (RFC 6350 KIND /
    Apple's X-ADDRESSBOOKSERVER-KIND for 3.0), with its addresses as members."""
    v4 = version.startswith("4")
    kind, member = (
        ("KIND", "MEMBER") if v4 else ("X-ADDRESSBOOKSERVER-KIND", "X-ADDRESSBOOKSERVER-MEMBER")
    )
    lines: list[str] = []
    if kind not in names:
        lines.append(f"{kind}:group")
    if member not in names:
        for ln in body:
            head, _, value = ln.partition(":")
            if head.split(";", 1)[0].upper() == "EMAIL" and value.strip():
                lines.append(f"{member}:mailto:{value.strip()}")
    return lines


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\r", " ").replace("\n", " ")
    return text if len(text) <= 120 else text[:117] + "..."
