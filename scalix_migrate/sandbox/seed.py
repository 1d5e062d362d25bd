"""The demo tenant: a deterministic Scalix directory and mailbox contents, generated in code.

``demo_tenant()`` returns the same :class:`DemoTenant` on every call (a fixed random seed; no
data files). What it contains, and why (each item exercises a part of the migration):

* Two mailnodes, ``main`` and ``branch``; six users, an admin ``sxadmin`` ("Scalix Admin",
  full administrator + ``mboxadmin``).
* ``Kim Lee`` (the test user): nested and non-ASCII folders (``INBOX/Projekte/Größe``,
  ``Archiv/2019``), all special folders, Calendar (``IPF.Appointment``, meeting requests with a
  ``text/calendar`` part) and Contacts (``IPF.Contact``, ``application/scalix-properties`` and a
  vCard for some), an open ``IMAP client`` session. Every user with a mailbox (but the admin)
  also has tasks, a weekly meeting with one moved instance (Outlook's ``TZID`` without a
  ``VTIMEZONE``), an all-day event and a distribution list.
* ``Jürgen Müller``: non-ASCII display name, ``Limited`` class, an ``SWA client`` session.
* ``Priya Shah`` — the CloudM "export name" (M0022) case: her login name (``auth_id``) is her
  *second* address ``pshah@…``, not the primary ``priya.shah@…`` listed first.
* ``Lars Berg`` on ``branch``: a folder whose Outlook name is ``Budget 2019/2020``. How Scalix
  shows a ``/`` inside a name over IMAP is unknown (reference/scalix.md §5.1); the sandbox's
  choice is that the slash arrives as a backslash, ``Budget 2019\\2020``, so the name stays one
  level and a preflight can see and report it. (A server that splits it into two levels would
  give nothing to detect.)
* ``New Hire`` on ``branch``: bulk-added, **no message store**: logs in to an empty INBOX.
* Messages (a few hundred): plain, multipart with base64 attachments, RFC 2047 and raw 8-bit
  UTF-8 headers, some without Message-ID, some sharing a Message-ID (also the same message
  filed twice), flags ``\\Seen \\Answered \\Flagged \\Draft \\X-Forwarded \\X-Has-Attach
  $Forwarded X-Scalix-Processed`` and keywords, INTERNALDATEs from 2014 to 2024 in several
  time zones. No message is header-only (pymap would drop its final line break).
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from scalix_migrate.sandbox.directory import Directory, DirectoryUser, FolderSpec, SeedMessage

DOMAIN = "acme.test"
MAILNODES = ["main", "branch"]
ADMIN_AUTH_ID = "sxadmin"
TEST_USER = f"kim.lee@{DOMAIN}"
SLASH_FOLDER = "Budget 2019\\2020"  # Outlook's "Budget 2019/2020", see the module docstring

STANDARD_FOLDERS = [
    FolderSpec("INBOX"),
    FolderSpec("Sent Items", special="SentItems"),
    FolderSpec("Deleted Items", special="DeletedItems"),
    FolderSpec("Drafts", special="Drafts"),
    FolderSpec("Calendar", special="Calendar", folder_class="IPF.Appointment"),
    FolderSpec("Contacts", special="Contacts", folder_class="IPF.Contact"),
    FolderSpec("Tasks", special="Tasks", folder_class="IPF.Task"),
]

_ZONES = [
    timezone(timedelta(hours=h, minutes=m))
    for h, m in [(-8, 0), (-5, 0), (0, 0), (1, 0), (2, 0), (5, 30), (9, 0)]
]
_SUBJECTS = [
    "Quarterly numbers",
    "Re: Lunch on Friday?",
    "Meeting notes",
    "Größenänderung der Projekte",
    "Réunion de l'équipe",
    "Invoice 2017-114",
    "Fwd: travel plans",
    "日本語の件名",
]
_KEYWORDS = ["$Label1", "Important", "Follow-up", "$Junk"]


@dataclass
class DemoTenant:
    directory: Directory
    messages: dict[str, list[SeedMessage]] = field(default_factory=dict)  # by user.name

    @property
    def message_count(self) -> int:
        return sum(len(m) for m in self.messages.values())


def _user(
    display: str,
    node: str,
    auth_id: str,
    addresses: list[str],
    extra: list[FolderSpec],
    **kw: object,
) -> DirectoryUser:
    return DirectoryUser(
        display_name=display,
        mailnode=node,
        auth_id=auth_id,
        addresses=addresses,
        password=f"demo-{auth_id.split('@')[0]}",
        folders=[*STANDARD_FOLDERS, *extra],
        **kw,  # type: ignore[arg-type]
    )


def demo_directory() -> Directory:
    users = [
        _user(
            "Scalix Admin",
            "main",
            ADMIN_AUTH_ID,
            [f"sxadmin@{DOMAIN}"],
            [],
            full_admin=True,
            capabilities=["mboxadmin"],
        ),
        _user(
            "Kim Lee",
            "main",
            TEST_USER,
            [TEST_USER, f"kim@{DOMAIN}"],
            [
                FolderSpec("INBOX/Projekte"),
                FolderSpec("INBOX/Projekte/Größe"),
                FolderSpec("Archiv"),
                FolderSpec("Archiv/2019"),
            ],
            sessions=["IMAP client"],
            store_limit_kib=1_000_000,
        ),
        _user(
            "Jürgen Müller",
            "main",
            f"j.mueller@{DOMAIN}",
            [f"j.mueller@{DOMAIN}"],
            [FolderSpec("Kunden/Öffentlich")],
            user_class="Limited",
            sessions=["SWA client"],
        ),
        _user(
            "Priya Shah",
            "main",
            f"pshah@{DOMAIN}",
            [f"priya.shah@{DOMAIN}", f"pshah@{DOMAIN}"],
            [FolderSpec("Reports")],
        ),
        _user(
            "Lars Berg",
            "branch",
            f"lars.berg@branch.{DOMAIN}",
            [f"lars.berg@branch.{DOMAIN}"],
            [FolderSpec(SLASH_FOLDER)],
        ),
        DirectoryUser(
            display_name="New Hire",
            mailnode="branch",
            auth_id=f"new.hire@branch.{DOMAIN}",
            addresses=[f"new.hire@branch.{DOMAIN}"],
            password="demo-new.hire",  # noqa: S106 - demo data, not a secret
            has_message_store=False,
            folders=[FolderSpec("INBOX")],
        ),
    ]
    return Directory(mailnodes=list(MAILNODES), users=users, hostname="scalix.acme.test")


def _when(rng: random.Random) -> datetime:
    start = datetime(2014, 1, 1, tzinfo=UTC)
    instant = start + timedelta(seconds=rng.randrange(11 * 365 * 86400))
    return instant.astimezone(rng.choice(_ZONES)).replace(microsecond=0)


def _rfc2047(text: str) -> str:
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


class _Writer:
    """Builds the messages of one user; every choice comes from one seeded RNG."""

    def __init__(self, user: DirectoryUser, rng: random.Random) -> None:
        self.user = user
        self.rng = rng
        self.out: list[SeedMessage] = []
        self.serial = 0
        self.last_id: str | None = None

    def headers(self, when: datetime, subject: str, *, raw_utf8: bool = False) -> list[str]:
        self.serial += 1
        rng = self.rng
        sender = rng.choice(
            [
                "Ana Ruiz <ana@partner.test>",
                "Bob Stone <bob@vendor.test>",
                "Zoë Ødegård <zoe@nord.test>",
            ]
        )
        if raw_utf8:
            subj, frm = subject, sender  # 8-bit header bytes, as some clients send them
        else:
            name, addr = sender.split(" <")
            subj, frm = _rfc2047(subject), f"{_rfc2047(name)} <{addr}"
        lines = [
            f"From: {frm}",
            f"To: {self.user.display_name} <{self.user.primary_address}>",
            f"Subject: {subj}",
            f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S %z')}",
        ]
        roll = rng.random()
        if roll < 0.06:
            pass  # no Message-ID at all
        elif roll < 0.12 and self.last_id:
            lines.append(f"Message-ID: {self.last_id}")  # a repeated Message-ID
        else:
            ident = f"<H{rng.getrandbits(64):016x}.{int(when.timestamp())}.scalix.acme.test@MHS>"
            lines.append(f"Message-ID: {ident}")
            self.last_id = ident
        return lines

    def flags(self, *extra: str) -> list[str]:
        rng = self.rng
        out = [
            f
            for f, p in [("\\Seen", 0.7), ("\\Answered", 0.2), ("\\Flagged", 0.1)]
            if rng.random() < p
        ]
        if rng.random() < 0.1:
            out += ["\\X-Forwarded", "$Forwarded"]
        if rng.random() < 0.15:
            out.append("X-Scalix-Processed")
        if rng.random() < 0.1:
            out.append(rng.choice(_KEYWORDS))
        return [*out, *extra]

    def add(
        self, folder: str, lines: list[str], body: str, flags: list[str], when: datetime
    ) -> None:
        data = ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")
        self.out.append(SeedMessage(folder=folder, body=data, flags=flags, internaldate=when))

    def mail(self, folder: str) -> None:
        rng = self.rng
        when = _when(rng)
        subject = rng.choice(_SUBJECTS)
        lines = self.headers(when, subject, raw_utf8=rng.random() < 0.15)
        lines.append("MIME-Version: 1.0")
        if rng.random() < 0.3:
            boundary = f"=_sx_{rng.getrandbits(48):012x}"
            blob = rng.randbytes(rng.randrange(600, 24_000))
            encoded = base64.encodebytes(blob).decode().replace("\n", "\r\n")
            name = rng.choice(["report.pdf", "Übersicht.xlsx", "photo.jpg"])
            lines.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
            body = (
                f"--{boundary}\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\nSiehe Anhang — see attachment.\r\n"
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Disposition: attachment; filename*=UTF-8''{_pct(name)}\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}"
                f"--{boundary}--\r\n"
            )
            flags = self.flags("\\X-Has-Attach")
        else:
            lines += ["Content-Type: text/plain; charset=UTF-8", "Content-Transfer-Encoding: 8bit"]
            body = f"Hallo {self.user.display_name},\r\n\r\n{subject} — #{self.serial}.\r\n"
            flags = self.flags()
        self.add(folder, lines, body, flags, when)

    def draft(self) -> None:
        when = _when(self.rng)
        lines = self.headers(when, "Entwurf: Angebot")
        lines.append("Content-Type: text/plain; charset=UTF-8")
        self.add("Drafts", lines, "Noch nicht fertig.\r\n", ["\\Draft", "\\Seen"], when)

    def meeting(self) -> None:
        rng = self.rng
        when = _when(rng)
        start = when + timedelta(days=rng.randrange(1, 30))
        uid = f"{rng.getrandbits(64):016x}@scalix.acme.test"
        boundary = f"=_cal_{rng.getrandbits(48):012x}"
        lines = self.headers(when, "Projektbesprechung")
        lines += [
            "MIME-Version: 1.0",
            "X-Scalix-Class: IPM.Appointment",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
        ]
        stamp = start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        end = (start + timedelta(hours=1)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        ics = (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Scalix//Sandbox//EN\r\nMETHOD:REQUEST\r\n"
            f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART:{stamp}\r\nDTEND:{end}\r\n"
            "SUMMARY:Projektbesprechung\r\nLOCATION:Raum 2\r\n"
            f"ORGANIZER:mailto:{self.user.primary_address}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        body = (
            f"--{boundary}\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
            f"Projektbesprechung am {start:%d.%m.%Y %H:%M}\r\n"
            f"--{boundary}\r\n"
            'Content-Type: text/calendar; method=REQUEST; charset=UTF-8; name="meeting.ics"\r\n'
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{ics}--{boundary}--\r\n"
        )
        self.add("Calendar", lines, body, ["\\Seen"], when)

    def contact(self, with_vcard: bool) -> None:
        rng = self.rng
        when = _when(rng)
        first, last = rng.choice([("Eva", "Kühn"), ("Tom", "Hart"), ("Mei", "Lin")])
        boundary = f"=_con_{rng.getrandbits(48):012x}"
        lines = [
            f"From: {self.user.display_name} <{self.user.primary_address}>",
            f"Subject: {_rfc2047(f'{first} {last}')}",
            f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S %z')}",
            "MIME-Version: 1.0",
            "X-Scalix-Class: IPM.Contact",
            f'Content-Type: multipart/mixed; boundary="{boundary}"',
        ]
        props = (
            '<?xml version="1.0" encoding="UTF-8"?>\r\n<scalix-properties>'
            f'<prop name="PR_GIVEN_NAME">{first}</prop><prop name="PR_SURNAME">{last}</prop>'
            "</scalix-properties>\r\n"
        )
        body = (
            f"--{boundary}\r\nContent-Type: application/scalix-properties\r\n"
            f"Content-Transfer-Encoding: 7bit\r\n\r\n{props}"
        )
        if with_vcard:
            body += (
                f"--{boundary}\r\nContent-Type: text/vcard; charset=UTF-8\r\n\r\n"
                f"BEGIN:VCARD\r\nVERSION:3.0\r\nN:{last};{first};;;\r\nFN:{first} {last}\r\n"
                f"EMAIL:{first.lower()}@contacts.test\r\nEND:VCARD\r\n"
            )
        body += f"--{boundary}--\r\n"
        self.add("Contacts", lines, body, [], when)


def _groupware_extras(writer: _Writer) -> None:
    """Tasks, a recurring meeting with a moved instance, an all-day and a floating event, and
    a distribution list: what a calendar/contacts migration must keep (its own RNG, so the
    messages above stay as they were)."""
    user = writer.user
    rng = random.Random(f"groupware-{user.auth_id}")
    when = datetime(2024, 3, 1, 9, tzinfo=UTC) + timedelta(days=rng.randrange(300))
    me = user.primary_address

    def item(folder: str, cls: str, subject: str, ctype: str, payload: str) -> None:
        lines = [
            f"From: {user.display_name} <{me}>",
            f"Subject: {_rfc2047(subject)}",
            f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S %z')}",
            "MIME-Version: 1.0",
            f"X-Scalix-Class: {cls}",
            f"Content-Type: {ctype}; charset=UTF-8",
            "Content-Transfer-Encoding: 8bit",
        ]
        writer.add(folder, lines, payload.replace("\n", "\r\n"), [], when)

    def cal(body: str) -> str:
        return f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//Scalix//Sandbox//EN\n{body}END:VCALENDAR\n"

    for n, (summary, due) in enumerate([("Angebot schreiben", 5), ("Reisekosten abrechnen", 12)]):
        day = (when + timedelta(days=due)).strftime("%Y%m%d")
        item(
            "Tasks",
            "IPM.Task",
            summary,
            "text/calendar",
            cal(
                f"BEGIN:VTODO\nUID:task-{n}-{rng.getrandbits(32):08x}@scalix.acme.test\n"
                f"SUMMARY:{summary}\nDUE;VALUE=DATE:{day}\nSTATUS:NEEDS-ACTION\nEND:VTODO\n"
            ),
        )
    uid = f"weekly-{rng.getrandbits(32):08x}@scalix.acme.test"
    start = when.strftime("%Y%m%dT100000")
    moved = (when + timedelta(days=14)).strftime("%Y%m%dT100000")
    tz = "TZID=W. Europe Standard Time"  # Outlook's zone name, and no VTIMEZONE: as Scalix sends
    item(
        "Calendar",
        "IPM.Appointment",
        "Jour fixe",
        "text/calendar",
        cal(
            f"METHOD:REQUEST\nBEGIN:VEVENT\nUID:{uid}\nDTSTART;{tz}:{start}\n"
            f"DURATION:PT1H\nRRULE:FREQ=WEEKLY;COUNT=8\nSUMMARY:Jour fixe\n"
            f"ORGANIZER:mailto:{me}\n"
            "ATTENDEE;CN=Ana Ruiz;PARTSTAT=ACCEPTED:mailto:ana@partner.test\n"
            "BEGIN:VALARM\nACTION:DISPLAY\nTRIGGER:-PT15M\nDESCRIPTION:Jour fixe\nEND:VALARM\n"
            "END:VEVENT\n"
        ),
    )
    item(
        "Calendar",
        "IPM.Appointment",
        "Jour fixe (verschoben)",
        "text/calendar",
        cal(
            f"BEGIN:VEVENT\nUID:{uid}\nRECURRENCE-ID;{tz}:{moved}\n"
            f"DTSTART;{tz}:{moved[:9]}140000\nDURATION:PT1H\nSUMMARY:Jour fixe (verschoben)\n"
            "END:VEVENT\n"
        ),
    )
    item(
        "Calendar",
        "IPM.Appointment",
        "Betriebsferien",
        "text/calendar",
        cal(
            f"BEGIN:VEVENT\nUID:holiday-{rng.getrandbits(32):08x}@scalix.acme.test\n"
            "DTSTART;VALUE=DATE:20241223\nDTEND;VALUE=DATE:20250102\nSUMMARY:Betriebsferien\n"
            "END:VEVENT\n"
        ),
    )
    item(
        "Contacts",
        "IPM.DistList",
        "Projektteam",
        "text/vcard",
        "BEGIN:VCARD\nVERSION:3.0\nN:Projektteam;;;;\nFN:Projektteam\n"
        "EMAIL:ana@partner.test\nEMAIL:bob@vendor.test\nEND:VCARD\n",
    )


def _pct(name: str) -> str:
    return "".join(
        c
        if (c.isascii() and c.isalnum()) or c in "._-"
        else "".join(f"%{b:02X}" for b in c.encode())
        for c in name
    )


# messages per user and folder: (folder, count); meetings/contacts/drafts are added apart
_PLAN: dict[str, list[tuple[str, int]]] = {
    "Scalix Admin": [("INBOX", 6), ("Sent Items", 2)],
    "Kim Lee": [
        ("INBOX", 70),
        ("INBOX/Projekte", 12),
        ("INBOX/Projekte/Größe", 9),
        ("Archiv/2019", 40),
        ("Sent Items", 25),
        ("Deleted Items", 8),
    ],
    "Jürgen Müller": [("INBOX", 35), ("Kunden/Öffentlich", 10), ("Sent Items", 8)],
    "Priya Shah": [("INBOX", 30), ("Reports", 12), ("Sent Items", 6)],
    "Lars Berg": [("INBOX", 25), (SLASH_FOLDER, 7), ("Deleted Items", 4)],
}


def demo_tenant() -> DemoTenant:
    """The demo directory with its mailbox contents; ``mailbox_kib`` set from the bytes."""
    directory = demo_directory()
    rng = random.Random(20240607)
    tenant = DemoTenant(directory=directory)
    for user in directory.users:
        if not user.has_message_store:
            continue
        writer = _Writer(user, rng)
        for folder, count in _PLAN.get(user.display_name, []):
            for _ in range(count):
                writer.mail(folder)
        if user.display_name != "Scalix Admin":
            for _ in range(6):
                writer.meeting()
            for i in range(5):
                writer.contact(with_vcard=i % 2 == 0)
            writer.draft()
            _groupware_extras(writer)
        if user.display_name == "Kim Lee":
            # The same message filed twice (INBOX and Archiv): identical bytes, two folders.
            twin = writer.out[0]
            writer.out.append(SeedMessage("Archiv", twin.body, ["\\Seen"], twin.internaldate))
        tenant.messages[user.name] = writer.out
        user.mailbox_kib = sum(len(m.body) for m in writer.out) // 1024
    return tenant
