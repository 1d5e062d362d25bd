"""The peer comparison's corpus and its fidelity measure (used by ``compare_peers.py``).

:func:`make_corpus` builds, deterministically from a seed, one user's mailbox in real-world
shapes: plain text, multipart with base64 attachments (10-120 KB before encoding), raw 8-bit
headers, no Message-ID, Message-IDs shared by different messages, exact duplicates, system flags and
keywords, INTERNALDATEs spread over 20 years in several zones, nested folders with non-ASCII
names and ``&``; ``tests/support/corpus.py::tricky_corpus()`` is mixed in as well.

:func:`compare_folder` measures fidelity the same way for every tool: per folder, the multiset
of (SHA-256 of the bytes, flags, INTERNALDATE to the second) at the destination against the
source. What is not an exact match is classified: same bytes but other flags (``flags``) or
another date (``dates``); same body after the header block but other bytes (``changed``, e.g. a
header added); otherwise ``missing`` (source only) or ``extra`` (destination only). A paired
message counts once under each way it differs (a changed message whose keywords were lost
counts under ``changed`` and ``flags``).
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from scalix_migrate.sandbox.directory import FolderSpec, SeedMessage
from tests.support.corpus import tricky_corpus

CRLF = b"\r\n"
# (folder spec, share of the messages)
FOLDERS: list[tuple[FolderSpec, float]] = [
    (FolderSpec("INBOX"), 0.45),
    (FolderSpec("Sent Items", special="SentItems"), 0.15),
    (FolderSpec("Drafts", special="Drafts"), 0.03),
    (FolderSpec("Archiv"), 0.10),
    (FolderSpec("Archiv/2023"), 0.10),
    (FolderSpec("Ärger & Co"), 0.09),
    (FolderSpec("Ärger & Co/Unterordner 日本"), 0.08),
]
ZONES = [timezone(timedelta(hours=h, minutes=m)) for h, m in [(0, 0), (2, 0), (-7, 0), (5, 30)]]
WORDS = [
    "meeting",
    "budget",
    "report",
    "invoice",
    "project",
    "deadline",
    "review",
    "contract",
    "draft",
    "schedule",
    "update",
    "customer",
    "order",
    "shipment",
    "question",
    "answer",
    "thanks",
    "regards",
    "please",
    "attached",
    "minutes",
    "agenda",
]
KEYWORDS = ["$Forwarded", "$MDNSent", "Projekt_X", "$Label1"]


def _text(rng: random.Random, size: int) -> bytes:
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).encode()
        lines.append(line)
        total += len(line) + 2
    return CRLF.join(lines)


def _b64(data: bytes) -> bytes:
    raw = base64.b64encode(data)
    return CRLF.join(raw[i : i + 76] for i in range(0, len(raw), 76))


def _message(rng: random.Random, n: int, tag: str, when: datetime, mid: str | None) -> bytes:
    """One message; ``n`` makes the body unique within the mailbox."""
    kind = rng.random()
    subject = f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{n}".encode()
    head = [
        b"From: " + (b"J\xf6rg M\xfcller <jm@example.com>" if kind < 0.08 else b"a@example.com"),
        b"To: " + tag.encode() + b"@example.test",
        b"Subject: " + (b"Gr\xc3\xbc\xc3\x9fe " + subject if kind < 0.08 else subject),
        b"Date: " + when.strftime("%a, %d %b %Y %H:%M:%S %z").encode(),
    ]
    if mid is not None:
        head.append(b"Message-ID: <" + mid.encode() + b">")
    unique = f"ref {tag} {n}".encode()
    if kind > 0.88:  # multipart with an attachment
        attachment = rng.randbytes(rng.randint(10_000, 120_000))
        head += [b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="b1"']
        body = [
            b"",
            b"--b1",
            b"Content-Type: text/plain; charset=utf-8",
            b"",
            unique,
            _text(rng, rng.randint(300, 3000)),
            b"--b1",
            b'Content-Type: application/pdf; name="doc.pdf"',
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="doc.pdf"',
            b"",
            _b64(attachment),
            b"--b1--",
        ]
    else:
        body = [b"", unique, _text(rng, rng.randint(800, 9000))]
    return CRLF.join(head + body) + CRLF


def _flags(rng: random.Random, folder: str) -> list[str]:
    flags = []
    if folder == "Drafts":
        flags.append("\\Draft")
    elif rng.random() < 0.7 or folder == "Sent Items":
        flags.append("\\Seen")
    if rng.random() < 0.1:
        flags.append("\\Answered")
    if rng.random() < 0.05:
        flags.append("\\Flagged")
    flags += [k for k in KEYWORDS if rng.random() < 0.04]
    return flags


def make_corpus(seed: int, tag: str, count: int) -> list[SeedMessage]:
    """About ``count`` messages for one user (plus the tricky ones), reproducible by ``seed``."""
    rng = random.Random(seed)
    names = [spec.name for spec, _ in FOLDERS]
    weights = [share for _, share in FOLDERS]
    start = datetime(2004, 1, 1, tzinfo=UTC)
    out: list[SeedMessage] = []
    mids: list[str] = []
    for n in range(count):
        folder = rng.choices(names, weights)[0]
        when = (start + timedelta(seconds=rng.randint(0, 20 * 365 * 86400))).astimezone(
            rng.choice(ZONES)
        )
        roll = rng.random()
        if roll < 0.05:
            mid = None  # no Message-ID (sent mail, drafts, some system mail)
        elif roll < 0.10 and mids:
            mid = rng.choice(mids)  # a Message-ID another, different message has
        else:
            mid = f"{n}.{seed}.{tag}@example.com"
            mids.append(mid)
        body = _message(rng, n, tag, when - timedelta(minutes=rng.randint(0, 90)), mid)
        msg = SeedMessage(folder, body, _flags(rng, folder), when)
        out.append(msg)
        if rng.random() < 0.01:  # an exact duplicate (same bytes, date, folder; own flags)
            out.append(SeedMessage(folder, body, _flags(rng, folder), when))
    for i, (body, flags) in enumerate(tricky_corpus()):
        when = datetime(2024, 6, 1, 8, i, 0, tzinfo=ZONES[i % len(ZONES)])
        out.append(SeedMessage(names[i % len(names)], body, flags, when))
    return out


@dataclass(frozen=True)
class Held:
    """One message as a server holds it, reduced to what fidelity compares."""

    sha256: str
    flags: frozenset[str]
    internaldate: int  # POSIX seconds: Dovecot keeps the instant, not the zone
    body_key: str  # SHA-256 of what follows the header block (pairs rewritten messages)
    size: int


def held(body: bytes, flags: Iterable[str], internaldate: datetime) -> Held:
    cut = body.find(b"\r\n\r\n")
    rest = body[cut:] if cut >= 0 else b""
    return Held(
        hashlib.sha256(body).hexdigest(),
        frozenset(f for f in flags if f != "\\Recent"),
        int(internaldate.timestamp()),
        hashlib.sha256(rest).hexdigest(),
        len(body),
    )


KINDS = ("missing", "extra", "changed", "flags", "dates")


def compare_folder(src: list[Held], dst: list[Held]) -> Counter[str]:
    """Differences between a source folder and its destination folder (see module doc)."""
    out: Counter[str] = Counter({k: 0 for k in KINDS})
    exact = Counter(src) & Counter(dst)
    left_src = list((Counter(src) - exact).elements())
    left_dst = list((Counter(dst) - exact).elements())
    for attr in ("sha256", "body_key"):
        unpaired: list[Held] = []
        for s in left_src:
            match = next((d for d in left_dst if getattr(d, attr) == getattr(s, attr)), None)
            if match is None:
                unpaired.append(s)
                continue
            left_dst.remove(match)
            out["changed"] += attr == "body_key"
            out["flags"] += s.flags != match.flags
            out["dates"] += s.internaldate != match.internaldate
        left_src = unpaired
    out["missing"] += len(left_src)
    out["extra"] += len(left_dst)
    return out
