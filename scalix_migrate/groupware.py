"""Calendar and contact items exported as files next to their messages.

A Scalix groupware item travels over IMAP as a message (``X-Scalix-Class: IPM.Appointment``,
``IPM.Contact``, …). It is always migrated as that message; in addition, when it carries a
``text/calendar`` part (appointments, tasks) or a vCard part (contacts), that part is written
as ``<staging>/<tenant>/<user>/groupware/<folder>/<sha256>.ics|.vcf`` so it can be imported
into a calendar or address book. Items whose only groupware payload is Scalix's own
``application/scalix-properties`` part stay messages; they are counted so the report can say so
(scalix.md §3.3: contacts over IMAP may have no vCard at all).

Files are named by the message's hash and written atomically: a rerun rewrites nothing.
"""

from __future__ import annotations

import email
import email.policy
import os
import tempfile
from enum import StrEnum
from pathlib import Path

from scalix_migrate.private import private_dir
from scalix_migrate.records import ItemClass
from scalix_migrate.staging import safe_component

_CALENDAR_TYPES = {"text/calendar"}
_VCARD_TYPES = {"text/vcard", "text/x-vcard", "text/directory"}
_PROPERTIES_TYPE = "application/scalix-properties"
_CALENDAR_CLASSES = {ItemClass.appointment, ItemClass.task}
GROUPWARE_CLASSES = frozenset(
    {ItemClass.appointment, ItemClass.contact, ItemClass.task, ItemClass.note, ItemClass.journal}
)


class GroupwareOutcome(StrEnum):
    ics = "ics"  # a .ics file was written (or already there)
    vcf = "vcf"  # a .vcf file was written (or already there)
    properties_only = "properties-only"  # only application/scalix-properties: message only
    message_only = "message-only"  # a groupware item with neither: message only


def _write_atomic(path: Path, data: bytes) -> None:
    if path.exists():
        return
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def groupware_dir(user_root: Path) -> Path:
    """Where a user's exported items go (``user_root`` is ``StagingStore.root``)."""
    return user_root / "groupware"


def groupware_parts(body: bytes) -> tuple[bytes | None, bytes | None, bool]:
    """(the first text/calendar part, the first vCard part, whether a scalix-properties part
    is there) of one message, decoded from their transfer encoding."""
    msg = email.message_from_bytes(body, policy=email.policy.compat32)
    calendar: bytes | None = None
    vcard: bytes | None = None
    has_properties = False
    for part in msg.walk():
        ctype = part.get_content_type()
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        if ctype in _CALENDAR_TYPES and calendar is None:
            calendar = payload
        elif ctype in _VCARD_TYPES and vcard is None:
            vcard = payload
        elif ctype == _PROPERTIES_TYPE:
            has_properties = True
    return calendar, vcard, has_properties


def export_item(
    body: bytes, *, sha256: str, item_class: ItemClass, folder: str, user_root: Path
) -> GroupwareOutcome | None:
    """Export the calendar or vCard part of one groupware item; ``None`` for plain mail."""
    if item_class not in GROUPWARE_CLASSES:
        return None
    calendar, vcard, has_properties = groupware_parts(body)
    target = groupware_dir(user_root) / safe_component(folder)
    if item_class in _CALENDAR_CLASSES and calendar is not None:
        _write_atomic(target / f"{sha256}.ics", calendar)
        return GroupwareOutcome.ics
    if item_class is ItemClass.contact and vcard is not None:
        _write_atomic(target / f"{sha256}.vcf", vcard)
        return GroupwareOutcome.vcf
    if has_properties:
        return GroupwareOutcome.properties_only
    return GroupwareOutcome.message_only
