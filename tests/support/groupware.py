"""Groupware items as Scalix serves them over IMAP, and a way to stage them without Scalix."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scalix_migrate.config import TenantConfig
from scalix_migrate.records import FolderCursor, ItemClass, LedgerEntry, ScalixUser, SourceFolder
from scalix_migrate.staging import StagingStore
from scalix_migrate.state import Journal

CRLF = "\r\n"


def calendar_message(ics: str, *, scalix_class: str = "IPM.Appointment") -> bytes:
    """An appointment/task item: a text part and the iCalendar part (METHOD as Scalix sends)."""
    boundary = "=_cal_" + uuid.uuid4().hex[:12]
    ics = ics.replace("\n", CRLF) if "\r\n" not in ics else ics
    return (
        f"Subject: item{CRLF}X-Scalix-Class: {scalix_class}{CRLF}MIME-Version: 1.0{CRLF}"
        f'Content-Type: multipart/alternative; boundary="{boundary}"{CRLF}{CRLF}'
        f"--{boundary}{CRLF}Content-Type: text/plain; charset=UTF-8{CRLF}{CRLF}text{CRLF}"
        f"--{boundary}{CRLF}Content-Type: text/calendar; method=REQUEST; charset=UTF-8{CRLF}"
        f"Content-Transfer-Encoding: 8bit{CRLF}{CRLF}{ics}--{boundary}--{CRLF}"
    ).encode()


def vcard_message(vcf: str | None, *, scalix_class: str = "IPM.Contact") -> bytes:
    """A contact item: Scalix's properties part, and a vCard part unless ``vcf`` is None."""
    boundary = "=_con_" + uuid.uuid4().hex[:12]
    body = (
        f"--{boundary}{CRLF}Content-Type: application/scalix-properties{CRLF}{CRLF}"
        f"<scalix-properties/>{CRLF}"
    )
    if vcf is not None:
        vcf = vcf.replace("\n", CRLF) if "\r\n" not in vcf else vcf
        body += f"--{boundary}{CRLF}Content-Type: text/vcard; charset=UTF-8{CRLF}{CRLF}{vcf}"
    return (
        f"Subject: contact{CRLF}X-Scalix-Class: {scalix_class}{CRLF}MIME-Version: 1.0{CRLF}"
        f'Content-Type: multipart/mixed; boundary="{boundary}"{CRLF}{CRLF}'
        f"{body}--{boundary}--{CRLF}"
    ).encode()


def dav_config(tmp_path: Path, dav_url: str, password: str, **destination: Any) -> TenantConfig:
    """A tenant whose calendars and contacts go to the Radicale at ``dav_url``."""
    dav = {"url": dav_url + "{email}/", "password": password}
    return TenantConfig.model_validate(
        {
            "tenant": "acme",
            "allow_inline_secrets": True,
            "source": {
                "server": "fake.example.test",
                "server_names": ["main"],
                "admin_user": "sxadmin",
                "admin_password": "pw",
                "test_user": "kim@example.test",
            },
            "destination": {
                "type": "mbox",
                "path": str(tmp_path / "mail"),
                "calendar": {"type": "caldav", **dav},
                "contacts": {"type": "carddav", **dav},
                **destination,
            },
            "options": {
                "staging_dir": str(tmp_path / "staging"),
                "state": {"dir": str(tmp_path / "state")},
            },
        }
    )


def new_user(tag: str | None = None) -> ScalixUser:
    tag = tag or "u" + uuid.uuid4().hex[:10]
    return ScalixUser(display_name=f"User {tag}", mailnode="main", addresses=(f"{tag}@acme.test",))


def stage_items(
    cfg: TenantConfig,
    journal: Journal,
    user: ScalixUser,
    folder: str,
    items: list[tuple[bytes, ItemClass]],
    *,
    folder_class: str | None = None,
) -> None:
    """Stage ``items`` and record them in the ledger as extract would (UIDs continue)."""
    source = SourceFolder(folder, folder, "/", frozenset(), folder_class=folder_class)
    journal.upsert_users(cfg.tenant, [user])
    cursor: FolderCursor = journal.open_folder(cfg.tenant, user.key, source, 1)
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
    entries = []
    for i, (body, item_class) in enumerate(items, start=cursor.highest_uid + 1):
        digest = store.put(body)
        entries.append(
            LedgerEntry(
                folder=folder,
                uidvalidity=1,
                uid=i,
                sha256=digest,
                size=len(body),
                internaldate=datetime(2024, 1, 1, tzinfo=UTC),
                flags=frozenset(),
                message_id=None,
                item_class=item_class,
            )
        )
    journal.record_batch(cfg.tenant, user.key, cursor, entries, cursor.highest_uid + len(items))
