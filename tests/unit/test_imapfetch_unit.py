"""The fast FETCH parser answers exactly as imapclient's parser, or leaves it to imapclient."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import pytest
from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_fetch_response

from scalix_migrate import imapfetch

BODY = b"Message-ID: <a@b>\r\n\r\nhello \xe4 ) {3}\r\n"
SHAPES: list[list[Any]] = [
    [
        b"1 (UID 7 RFC822.SIZE 120 FLAGS (\\Seen $Forwarded Projekt_X) "
        b'INTERNALDATE "01-Feb-2020 10:00:00 +0100")'
    ],
    [b'2 (UID 9 FLAGS () INTERNALDATE " 3-Mar-2003 23:59:59 -0800" RFC822.SIZE 0)'],
    [
        (
            b"3 (UID 11 RFC822.SIZE %d FLAGS (\\Answered) "
            b'INTERNALDATE "01-Jan-2000 00:00:00 +0000" BODY[] {%d}' % (len(BODY), len(BODY)),
            BODY,
        ),
        b")",
    ],
    [(b"4 (UID 12 BODY[] {%d}" % len(BODY), BODY), b")", b"4 (FLAGS (\\Seen))"],
    [b"5 (FLAGS (\\Deleted) UID 13)", b"6 (UID 14 FLAGS (\\Seen \\Flagged))"],
    # Shapes for imapclient: a numeric keyword, NIL, leading zeros, a quoted size, a trailer.
    [b'7 (UID 15 FLAGS (\\Seen 123) INTERNALDATE "01-Feb-2020 10:00:00 +0100")'],
    [b"8 (UID 16 FLAGS (NIL))"],
    [b"9 (UID 0017 RFC822.SIZE 01)"],
    [(b"10 (UID 18 BODY[] {%d}" % len(BODY), BODY), b" FLAGS (\\Seen))"],
    [b'11 (UID 19 INTERNALDATE "garbage")'],
    [b"12 (UID 20 FLAGS (%Odd [x]))"],
    [None],
]


@pytest.mark.parametrize("data", SHAPES)
@pytest.mark.parametrize("normalise", [False, True])
@pytest.mark.parametrize("uid_is_key", [False, True])
def test_parse_fetch_equals_imapclient(data: list[Any], normalise: bool, uid_is_key: bool) -> None:
    expected = dict(parse_fetch_response(data, normalise, uid_is_key))
    assert imapfetch.parse_fetch(data, normalise, uid_is_key) == expected


def test_fast_path_taken_for_our_shapes_and_refused_for_others() -> None:
    for data in SHAPES[:5]:
        assert imapfetch._fast(data, False, True) is not None, data
    for data in SHAPES[5:9]:
        assert imapfetch._fast(data, False, True) is None, data


def test_flag_list_without_catastrophic_backtracking() -> None:
    data = [b"1 (UID 2 FLAGS (" + b"a" * 5000 + b"%))"]
    assert imapfetch._fast(data, False, True) is None


def test_quiet_protocol_trace_turns_imaplib_trace_off() -> None:
    class FakeImap:
        debug = 5

    class FakeClient:
        _imap = FakeImap()

    client: Any = FakeClient()
    imapfetch.quiet_protocol_trace(client)
    assert client._imap.debug == 0


def _reference_date(value: bytes, normalise: bool) -> datetime | None:
    try:
        parsed: datetime = parse_to_datetime(value, normalise=normalise)
    except ValueError:
        return None
    return parsed


DATES = [
    b" 3-Mar-2003 23:59:59 -0800",
    b"01-Jan-2000 00:00:00 +0000",
    b"01-Jan-2000 00:00:00 -0000",
    b"29-Feb-2024 12:30:00 +0530",
    b"31-Dec-1999 23:59:59 -0330",
    b"31-Feb-2020 10:00:00 +0100",
    b"01-Feb-2020 24:00:00 +0100",
    b"00-Feb-2020 10:00:00 +0100",
    b"01-jan-2000 00:00:00 +0000",
    b"1-Jan-2000 00:00:00 +0000",
    b"Sat, 8 May 2010 16.03.09 +0200",
    b"01-Jan-2000 00:00:00 +0199",
    b"garbage",
]


@pytest.mark.parametrize("value", DATES)
@pytest.mark.parametrize("normalise", [False, True])
def test_internaldate_equals_imapclient(value: bytes, normalise: bool) -> None:
    got, want = imapfetch._internaldate(value, normalise), _reference_date(value, normalise)
    assert got == want
    if got is not None and want is not None:
        # Same wall clock, zone object type and offset, not only the same instant.
        assert got.replace(tzinfo=None) == want.replace(tzinfo=None)
        assert type(got.tzinfo) is type(want.tzinfo)
        assert got.utcoffset() == want.utcoffset()


def test_internaldate_sweep_over_days_zones_and_times() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        day, month = rng.randint(1, 31), rng.choice(imapfetch._MONTH_NAMES)
        zone = rng.choice([b"+", b"-"]) + b"%02d%02d" % (
            rng.randint(0, 14),
            rng.choice([0, 30, 45]),
        )
        value = b"%2d-%s-%04d %02d:%02d:%02d %s" % (
            day, month, rng.randint(1970, 2038), rng.randint(0, 23), rng.randint(0, 59),
            rng.randint(0, 59), zone,
        )  # fmt: skip
        got, want = imapfetch._internaldate(value, False), _reference_date(value, False)
        assert got == want, value
        if got is not None and want is not None:
            assert got.replace(tzinfo=None) == want.replace(tzinfo=None), value
            assert got.utcoffset() == want.utcoffset(), value
