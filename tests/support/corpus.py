"""Real-world tricky messages: the corpus every end-to-end fidelity test copies."""

from __future__ import annotations

CRLF = b"\r\n"


def _m(*lines: bytes) -> bytes:
    return CRLF.join(lines) + CRLF


def tricky_corpus() -> list[tuple[bytes, list[str]]]:
    """Real-world shapes that break naive copiers (bodies CRLF: Dovecot serves CRLF)."""
    long_line = b"x" * 12000
    return [
        (
            _m(
                b"From: a@example.com",
                b"To: b@example.com",
                b"Subject: plain",
                b"Date: Tue, 4 Jun 2024 09:00:00 +0200",
                b"Message-ID: <plain@example.com>",
                b"",
                b"hello",
            ),
            ["\\Seen"],
        ),
        # 8-bit header and body bytes (latin-1 and UTF-8 raw, no encoded-words).
        (
            _m(
                b"From: J\xf6rg <j@example.com>",
                b"Subject: Gr\xc3\xb6\xc3\x9fe \xe2\x82\xac",
                b"Date: Wed, 5 Jun 2024 10:00:00 -0700",
                b"Message-ID: <8bit@example.com>",
                b"",
                b"K\xe4se und Br\xf6tchen",
            ),
            ["\\Answered", "$Forwarded"],
        ),
        # No Message-ID, no Date, no Subject.
        (_m(b"From: nobody@example.com", b"", b"headers missing"), []),
        # Duplicate Message-ID, different bodies.
        (_m(b"Message-ID: <dup@example.com>", b"Subject: dup one", b"", b"one"), ["\\Flagged"]),
        (_m(b"Message-ID: <dup@example.com>", b"Subject: dup two", b"", b"two"), ["\\Draft"]),
        # Odd MIME: nested multipart, missing final boundary, odd charset, base64 with garbage.
        (
            _m(
                b"Message-ID: <mime@example.com>",
                b"MIME-Version: 1.0",
                b'Content-Type: multipart/mixed; boundary="outer"',
                b"",
                b"--outer",
                b'Content-Type: multipart/alternative; boundary="inner"',
                b"",
                b"--inner",
                b"Content-Type: text/plain; charset=x-unknown",
                b"",
                b"text",
                b"--inner",
                b"Content-Type: text/html",
                b"",
                b"<p>html</p>",
                b"--outer",
                b"Content-Type: application/octet-stream",
                b"Content-Transfer-Encoding: base64",
                b"",
                b"AAEC!!notbase64==",
                b"",
            ),
            [],
        ),
        # Very long line, folded header, "From " lines in the body, trailing spaces.
        (
            _m(
                b"Message-ID: <long@example.com>",
                b"Subject: a folded",
                b"\tsubject line   ",
                b"",
                long_line,
                b"From the desk of",
                b">From quoted",
                b"end   ",
            ),
            ["\\Seen", "Projekt_X"],
        ),
        # Header only, no body.
        (_m(b"Message-ID: <hdronly@example.com>", b"Subject: header only"), ["\\Seen"]),
    ]
