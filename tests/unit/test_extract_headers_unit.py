"""extract's plain-header fast path reads Message-ID and X-Scalix-Class as the email parser does."""

from __future__ import annotations

import random
from email.parser import BytesHeaderParser
from email.policy import compat32

import pytest

from scalix_migrate.extract import _headers, _headers_plain
from tests.support.corpus import tricky_corpus


def _by_email_parser(head: bytes) -> tuple[str | None, str | None]:
    msg = BytesHeaderParser(policy=compat32).parsebytes(head)
    mid, cls = msg.get("Message-ID"), msg.get("X-Scalix-Class")
    return (
        str(mid).strip() or None if mid is not None else None,
        str(cls).strip() or None if cls is not None else None,
    )


CASES = [
    b"Message-ID: <a@b>\r\nX-Scalix-Class: IPM.Appointment\r\n\r\n",
    b"message-id:<a@b>\r\nx-scalix-class:\tIPM.Contact \r\n",
    b"Message-ID:\r\n <folded@b>\r\nSubject: x\r\n",
    b"Message-ID: <a\r\n\t@b>\r\n",
    b"Message-ID: <first@b>\r\nMessage-ID: <second@b>\r\n",
    b"Message-ID: \r\nMessage-ID: <second@b>\r\n",
    b" continuation first\r\nMessage-ID: <a@b>\r\n",
    b": no name\r\n <cont>\r\nMessage-ID: <a@b>\r\n",
    b"Subject: x\r\nnot a header line\r\nMessage-ID: <late@b>\r\n",
    b"Subject: x\nMessage-ID: <lf@b>\n\nbody Message-ID: <no@b>\n",
    b"Message-ID <no colon>\r\nX-Scalix-Class: IPM.Task\r\n",
    b"Message-ID : <space before colon>\r\n",
    b"From someone Tue Jun  4 09:00:00 2024\r\nMessage-ID: <mbox@b>\r\n",
    b"Subject: x\r\nMessage-ID: <cr\ronly@b>\r\n",
    b"Subject: \xe4\r\nMessage-ID: <8bit@b>\r\n",
    b"Subject: x\x0c\r\nMessage-ID: <ff@b>\r\n",
    b"",
    b"\r\n",
    b"Message-ID: <no line end@b>",
]


@pytest.mark.parametrize("head", CASES)
def test_same_as_email_parser(head: bytes) -> None:
    fast = _headers_plain(head)
    if fast is not None:
        assert fast == _by_email_parser(head)
    assert _headers(head) == _by_email_parser(head)


def test_fast_path_taken_for_plain_blocks_and_refused_for_others() -> None:
    assert _headers_plain(CASES[0]) == ("<a@b>", "IPM.Appointment")
    for head in (CASES[12], CASES[13], CASES[14], CASES[15]):
        assert _headers_plain(head) is None


def test_tricky_corpus_same_as_email_parser() -> None:
    for body, _flags in tricky_corpus():
        assert _headers(body) == _by_email_parser(body.split(b"\r\n\r\n")[0] + b"\r\n")


def test_random_header_blocks_same_as_email_parser() -> None:
    rng = random.Random(11)
    pieces = [
        b"Message-ID: <m%d@x>",
        b"MESSAGE-ID:<m%d@x>",
        b"X-Scalix-Class: IPM.Note.%d",
        b"x-scalix-class:  IPM.Appointment%d ",
        b"Subject: s%d",
        b" cont%d",
        b"\tcont%d",
        b": empty%d",
        b"bad line %d",
        b"Message-ID:",
        b"X-Scalix-Class: ",
        b"",
    ]
    taken = 0
    for _ in range(3000):
        eol = rng.choice([b"\r\n", b"\n"])
        lines = [
            (p % rng.randint(0, 9)) if b"%d" in p else p
            for p in rng.choices(pieces, k=rng.randint(0, 8))
        ]
        head = eol.join(lines) + rng.choice([eol, b""])
        fast = _headers_plain(head)
        if fast is not None:
            taken += 1
            assert fast == _by_email_parser(head), head
    assert taken > 2500
