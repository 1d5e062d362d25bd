"""DavClient's classing of server replies, and bearer tokens, against a small fake server."""

from __future__ import annotations

import sys

import httpx
import pytest

from scalix_migrate.dav import DavClient
from scalix_migrate.errors import ItemError, TransientError, UserError
from scalix_migrate.groupware_sync import _BearerAuth
from scalix_migrate.xoauth2 import TokenSource

HOME = "https://dav.test/kim@x/"


def _client(handler: httpx.MockTransport, auth: httpx.Auth | None = None) -> DavClient:
    return DavClient(HOME, kind="caldav", auth=auth, user="kim@x", transport=handler)


def test_server_replies_are_classed_by_what_the_caller_should_do() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("busy.ics"):
            return httpx.Response(503, headers={"Retry-After": "7"})
        if path.endswith("taken.ics"):
            return httpx.Response(412)
        if path.endswith("huge.ics"):
            return httpx.Response(413)
        if request.method == "PROPFIND":
            return httpx.Response(401)
        return httpx.Response(201, headers={"ETag": '"e1"'})

    with _client(httpx.MockTransport(reply), httpx.BasicAuth("kim", "s3cret-pw")) as client:
        assert client.create(HOME + "new.ics", b"x", "text/calendar") == '"e1"'
        assert client.create(HOME + "taken.ics", b"x", "text/calendar") is None
        with pytest.raises(TransientError) as busy:
            client.create(HOME + "busy.ics", b"x", "text/calendar")
        assert busy.value.code == "SXM-GW-007"
        assert busy.value.retry_after_s == 7.0
        with pytest.raises(ItemError) as huge:
            client.create(HOME + "huge.ics", b"x", "text/calendar")
        assert huge.value.code == "SXM-GW-004"
        with pytest.raises(UserError) as login:
            client.check_login()
        assert login.value.code == "SXM-GW-006"
        with pytest.raises(ItemError):
            client.replace(HOME + "taken.ics", b"x", "text/calendar", '"old"')
    for exc in (busy.value, huge.value, login.value):
        assert "s3cret-pw" not in str(exc)


def test_an_unreachable_server_is_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with _client(httpx.MockTransport(refuse)) as client, pytest.raises(TransientError) as info:
        client.check_login()
    assert info.value.code == "SXM-GW-007"


def test_a_refused_bearer_token_is_fetched_again_once(tmp_path: object) -> None:
    seen: list[str] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(401 if len(seen) == 1 else 207, content=b"<multistatus/>")

    counter = f"{tmp_path}/n"
    script = (
        "import pathlib,sys;p=pathlib.Path(sys.argv[1]);"
        "n=int(p.read_text()) if p.exists() else 0;p.write_text(str(n+1));print(f'tok-{n}')"
    )
    tokens = TokenSource(
        command=f'{sys.executable} -c "{script}" {counter}', file=None, placeholders={}
    )
    with _client(httpx.MockTransport(reply), _BearerAuth(tokens)) as client:
        client.check_login()
    assert seen == ["Bearer tok-0", "Bearer tok-1"]
    assert "tok" not in repr(_BearerAuth(tokens))
