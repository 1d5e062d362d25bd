"""message_id_of (one regular expression) reads what the full header parser reads."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from scalix_migrate.destinations.maildir import MaildirDestination
from scalix_migrate.extract import extract_user
from scalix_migrate.message_identity import (
    fingerprint_of,
    header_block,
    header_values,
    message_id_of,
)
from scalix_migrate.state import Journal
from tests.support.corpus import tricky_corpus
from tests.unit.test_extract_unit import (
    T0,
    USER,
    FakeFolder,
    FakeMailbox,
    FakeServer,
    folder,
    make_cfg,
)


def _by_header_values(body: bytes) -> str | None:
    values = header_values(header_block(body)).get("message-id") or []
    text = values[0].decode("utf-8", "replace").strip() if values else ""
    return text or None


SHAPES = [
    b"Message-ID : <a@b>\r\n\r\nx",
    b"X: y\r\nMessage-ID:\r\n <folded@x>\r\n\t more\r\n\r\nbody",
    b"message-id: <lower>\n\nbody",
    b"Subject: a\r\n Message-ID: <continuation, not a header>\r\n\r\n",
    b"garbage\r\nMessage-ID: <after-garbage>\r\n\r\n",
    b"Message-ID:   \r\n\r\n",
    "Message-Id: <ä@x>\r\n\r\n".encode(),
    b"Message-ID x: <a blank in the name>\r\n\r\n",
    b"Message-ID:<a>\rMessage-ID:<b>\r\n\r\n",
    b"Subject: s\r\n\r\nMessage-ID: <in the body>\r\n",
    b"",
]


@pytest.mark.parametrize("body", SHAPES + [b for b, _ in tricky_corpus()])
def test_message_id_matches_the_header_parser(body: bytes) -> None:
    assert message_id_of(body) == _by_header_values(body)


def test_message_id_matches_the_header_parser_on_random_header_blocks() -> None:
    rng = random.Random(20261202)
    names = [b"Message-ID", b"message-id", b"Message-ID ", b"X", b" cont", b"\tcont", b""]
    values = [b" <a@b>", b"  ", b"<c>\r", b"", b" <d@e> (comment)"]
    for _ in range(3000):
        lines = [
            rng.choice(names) + rng.choice([b":", b""]) + rng.choice(values)
            for _ in range(rng.randint(0, 6))
        ]
        body = rng.choice([b"\r\n", b"\n"]).join(lines) + b"\r\n\r\nbody"
        assert message_id_of(body) == _by_header_values(body), body


FOLDED = [
    # a Message-ID value continued on the next line (RFC 5322 folding)
    b"Subject: s\r\nMessage-ID: <a-rather-long-local-part\r\n @example.test>\r\n\r\nbody",
    b"Subject: s\r\nMessage-ID: <tabbed\r\n\t@example.test>\r\n\r\nbody",
    b"Message-ID:\r\n <next-line@example.test>\r\nSubject: s\r\n\r\nbody",
    # a blank before the colon: the header parser reads it, so extract must too
    b"Message-ID : <blank-before-colon@example.test>\r\n\r\nbody",
]


@pytest.mark.parametrize("body", FOLDED)
def test_extract_records_the_message_id_the_destinations_read_back(
    body: bytes, tmp_path: Path
) -> None:
    """The ledger's Message-ID (extract) is the one a sink reads back from the same bytes:
    load's reconciliation and verify look one up by the other."""
    server = FakeServer([FakeFolder(folder("INBOX"))])
    server.folders[0].add(body)
    cfg = make_cfg(tmp_path)
    with Journal.open(directory=tmp_path / "state") as journal:
        extract_user(cfg, journal, USER, mailbox=lambda c, u: FakeMailbox(server))
        (entry,) = journal.entries("acme", USER.key)
    with MaildirDestination(tmp_path / "maildir") as dest:
        dest.ensure_folder("INBOX")
        stored = dest.append("INBOX", body, frozenset(), T0)
        (held,) = dest.messages("INBOX")
        found = dest.find(
            "INBOX",
            message_id=entry.message_id,
            size=len(body),
            fingerprint=fingerprint_of(body, 0),
        )
    assert entry.message_id is not None
    assert entry.message_id == held.message_id == message_id_of(body)
    assert found == stored
