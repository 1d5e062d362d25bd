"""message_id_of (one regular expression) reads what the full header parser reads."""

from __future__ import annotations

import random

import pytest

from scalix_migrate.destinations.base import header_block, header_values, message_id_of
from tests.support.corpus import tricky_corpus


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
