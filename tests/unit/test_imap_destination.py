"""The IMAP sink's response handling and the XOAUTH2 token source, without a server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.destinations import imap as imap_mod
from scalix_migrate.destinations.imap import ImapDestination, _Throttled, _uid_set
from scalix_migrate.errors import ItemError, TransientError, UserError
from scalix_migrate.records import ScalixUser
from scalix_migrate.user_context import UserContext
from scalix_migrate.xoauth2 import TokenSource, xoauth2_string
from tests.contract.conftest import base_config

USER = ScalixUser(display_name="Kim Lee", mailnode="mail", addresses=("kim@example.com",))


def _dest(tmp_path: Path) -> ImapDestination:
    block = (
        "destination:\n  type: imap\n  host: 127.0.0.1\n  tls: none\n  preset: m365\n"
        "  password: pw\n"
    )
    cfg = base_config(tmp_path, block)
    assert cfg.destination.type == "imap"
    dest = UserContext.of(cfg, USER).open_destination()
    assert isinstance(dest, ImapDestination)
    return dest


def test_appenduid_sets_are_expanded() -> None:
    assert _uid_set(b"3:5,9") == ["3", "4", "5", "9"]


def test_responses_are_classified(tmp_path: Path) -> None:
    d = _dest(tmp_path)
    with pytest.raises(UserError) as quota:
        d._classify_no(b"[OVERQUOTA] Quota exceeded (mailbox for user is full)", "INBOX")
    assert quota.value.code == "SXM-DST-003"
    with pytest.raises(_Throttled) as throttled:
        d._classify_no(b"Request is throttled. Suggested Backoff Time: 1500 milliseconds", "X")
    assert throttled.value.delay_s == 1.5
    with pytest.raises(_Throttled):
        d._classify_no(b"[THROTTLED] slow down", "INBOX")
    with pytest.raises(ItemError) as too_big:
        d._classify_no(b"[TOOBIG] Mail too large", "INBOX")
    assert too_big.value.code == "SXM-DST-004"


def test_throttling_backs_off_as_hinted_then_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _dest(tmp_path)
    d.client = object()  # type: ignore[assignment]
    sleeps: list[float] = []
    monkeypatch.setattr(imap_mod.time, "sleep", sleeps.append)
    calls = iter([_Throttled(0.25), _Throttled(0.5), "done"])

    def op(_: Any) -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert d._retrying("APPEND", op) == "done"
    assert sleeps == [0.25, 0.5]

    def always(_: Any) -> str:
        raise _Throttled(1.0)

    with pytest.raises(TransientError) as err:
        d._retrying("APPEND", always)
    assert err.value.code == "SXM-DST-005"
    assert len(sleeps) == 2 + imap_mod.MAX_ATTEMPTS - 1

    def huge(_: Any) -> str:
        raise _Throttled(299.961)

    with pytest.raises(TransientError) as hinted:
        d._retrying("APPEND", huge)
    assert hinted.value.retry_after_s == 299.961


def test_connection_drop_during_append_is_not_retried_blindly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _dest(tmp_path)
    d.client = None
    monkeypatch.setattr(d, "_c", lambda: object())

    def drop(_: Any) -> str:
        raise ConnectionResetError

    with pytest.raises(TransientError):
        d._retrying("APPEND", drop, idempotent=False)


class _ByeThenEof:
    """A client whose server stored the batch but answered ``* BYE`` and closed the
    connection before the tagged OK: imaplib raises ``abort``, a subclass of ``error``."""

    def __init__(self) -> None:
        self.appends = 0
        self.closed = False

    def _normalise_folder(self, folder: str) -> bytes:
        return folder.encode()

    def _raw_command(self, *args: object, **kwargs: object) -> tuple[str, list[bytes]]:
        import imaplib

        self.appends += 1
        raise imaplib.IMAP4.abort("command: APPEND => socket error: EOF")

    def logout(self) -> None:
        raise OSError("the connection is gone")

    def shutdown(self) -> None:
        self.closed = True


@pytest.mark.parametrize("count", [1, 3])
def test_a_bye_during_append_is_a_lost_connection_not_a_refused_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """Read as "APPEND rejected", the BYE made the batch's messages item errors and sent
    them again one by one (30 differences at verify, under load, in the fault suite). It is
    a connection fault: the loader reconciles the batch, nothing is appended again."""
    from datetime import UTC, datetime

    from scalix_migrate.destinations.base import AppendItem

    d = _dest(tmp_path)
    client = _ByeThenEof()
    d.client = client  # type: ignore[assignment]
    d.multiappend = True
    monkeypatch.setattr(d, "_connect", lambda **_: pytest.fail("reconnected to append again"))
    items = [AppendItem(b"Subject: x\r\n\r\nbody\r\n", frozenset(), datetime.now(UTC))] * count
    with pytest.raises(TransientError) as lost:
        d.append_many("INBOX", items)
    assert "reconciles" in str(lost.value)
    assert client.appends == 1
    assert client.closed  # the next command connects again


def test_m365_layout_preset(tmp_path: Path) -> None:
    d = _dest(tmp_path)
    assert d.preset.case_insensitive
    assert d.preset.max_message_size == 36_000_000
    assert "pw" not in repr(d)


def test_token_command_runs_without_a_shell_and_refreshes(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    counter.write_text("0")
    script = (
        "import sys,pathlib; p=pathlib.Path(sys.argv[2]); n=int(p.read_text())+1; "
        "p.write_text(str(n)); print(f'tok{n}-'+sys.argv[1])"
    )
    email = "o'brien; touch /tmp/pwned@example.com"
    source = TokenSource(
        command=f"{sys.executable} -c {_q(script)} {{email}} {_q(str(counter))}",
        file=None,
        placeholders={"email": email},
    )
    assert source.token() == f"tok1-{email}"
    assert source.token() == f"tok1-{email}"  # cached
    assert source.token(refresh=True) == f"tok2-{email}"
    assert "tok1" not in repr(source)
    assert "tok2" not in repr(source)
    assert not Path("/tmp/pwned@example.com").exists()


def test_token_failures_do_not_leak_output(tmp_path: Path) -> None:
    failing = TokenSource(
        command=f"{sys.executable} -c \"import sys; sys.stderr.write('secret-xyz'); sys.exit(3)\"",
        file=None,
        placeholders={},
    )
    with pytest.raises(UserError) as err:
        failing.token()
    assert err.value.code == "SXM-DST-002"
    assert "secret-xyz" not in str(err.value)


def test_token_file_is_read_again_on_refresh(tmp_path: Path) -> None:
    path = tmp_path / "kim.token"
    path.write_text("first\n")
    source = TokenSource(
        command=None, file=str(tmp_path / "{local_part}.token"), placeholders={"local_part": "kim"}
    )
    assert source.token() == "first"
    path.write_text("second\n")
    assert source.token(refresh=True) == "second"
    assert xoauth2_string("u", "t") == b"user=u\x01auth=Bearer t\x01\x01"


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)
