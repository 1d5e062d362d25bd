"""A small CalDAV/CardDAV client over plain HTTP (httpx): the verbs a migration needs.

``DavClient`` speaks in domain verbs: :meth:`~DavClient.ensure_collection` (MKCALENDAR, or
extended MKCOL for address books, RFC 4791 §5.3.1 / RFC 5689), :meth:`~DavClient.create`
(``PUT`` with ``If-None-Match: *``: a resource that exists is never overwritten by a create),
:meth:`~DavClient.replace` (``PUT`` with ``If-Match``), :meth:`~DavClient.fetch` (``GET``, with
its ETag), :meth:`~DavClient.list_etags` (``PROPFIND`` depth 1) and :meth:`~DavClient.delete`.

Server replies are classed at this boundary: 401/403 on login -> ``UserError`` SXM-GW-006,
connection problems, timeouts, 429 and 5xx -> ``TransientError`` SXM-GW-007 (Prefect retries),
a refused resource -> ``ItemError`` SXM-GW-004. No message carries a password, a token or a
resource body. Every request has an explicit timeout.

:func:`home_url` says where a preset keeps a user's collections.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx

from scalix_migrate.errors import ItemError, TransientError, UserError

DavKind = Literal["caldav", "carddav"]
_NS = {"d": "DAV:", "c": "urn:ietf:params:xml:ns:caldav", "a": "urn:ietf:params:xml:ns:carddav"}
_PRESET_PATHS = {
    ("nextcloud", "caldav"): "/remote.php/dav/calendars/{login}/",
    ("nextcloud", "carddav"): "/remote.php/dav/addressbooks/users/{login}/",
    ("sogo", "caldav"): "/SOGo/dav/{login}/Calendar/",
    ("sogo", "carddav"): "/SOGo/dav/{login}/Contacts/",
}


def home_url(url: str, preset: str, kind: DavKind, login: str) -> str:
    """Where the user's collections live (``url`` already has the user's placeholders filled).

    ``generic`` and ``google``: ``url`` itself (for Google, the one calendar or address book
    every folder goes into); ``nextcloud``/``sogo``: their standard path under ``url``.
    """
    path = _PRESET_PATHS.get((preset, kind))
    if path is None:
        return url if url.endswith("/") else url + "/"
    return url.rstrip("/") + path.format(login=quote(login, safe="@"))


def collection_slug(folder: str) -> str:
    """A collection's path segment for a Scalix folder: readable, stable, collision-free."""
    slug = re.sub(r"[^a-z0-9]+", "-", folder.lower()).strip("-") or "folder"
    if slug != folder.lower():
        slug += "-" + hashlib.sha256(folder.encode("utf-8")).hexdigest()[:8]
    return slug


@dataclass(frozen=True)
class Fetched:
    data: bytes
    etag: str | None


class DavClient:
    """One user's session with a CalDAV or CardDAV server (a context manager)."""

    def __init__(
        self,
        home: str,
        *,
        kind: DavKind,
        auth: httpx.Auth | None,
        user: str | None = None,
        verify: bool | str = True,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.home = home
        self.kind = kind
        self.user = user
        self._auth = auth
        self._verify = verify
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 15.0))
        self._transport = transport
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"DavClient({self.kind}, home={self.home!r}, user={self.user!r})"

    def __enter__(self) -> DavClient:
        self._client = httpx.Client(
            auth=self._auth,
            verify=self._verify,
            timeout=self._timeout,
            transport=self._transport,
            follow_redirects=False,
            headers={"User-Agent": "scalix-migrate"},
        )
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- requests ------------------------------------------------------------------------

    def _request(
        self, method: str, url: str, *, content: bytes | None = None, headers: dict[str, str]
    ) -> httpx.Response:
        assert self._client is not None, "use DavClient as a context manager"
        try:
            response = self._client.request(method, url, content=content, headers=headers)
        except httpx.TimeoutException:
            raise TransientError(
                f"DAV {method} timed out ({_path(url)})", code="SXM-GW-007", user=self.user
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"DAV server unreachable for {method} ({type(exc).__name__})",
                code="SXM-GW-007",
                user=self.user,
            ) from None
        status = response.status_code
        if status in (401, 403) and method in ("PROPFIND", "OPTIONS"):
            raise UserError(
                f"DAV login refused (HTTP {status} for {_path(url)})",
                code="SXM-GW-006",
                user=self.user,
            )
        if status == 429 or status >= 500:
            retry = response.headers.get("Retry-After", "")
            raise TransientError(
                f"DAV server answered {status} to {method} {_path(url)}",
                code="SXM-GW-007",
                user=self.user,
                retry_after_s=float(retry) if retry.isdigit() else None,
            )
        return response

    def _propfind(self, url: str, body: str, *, depth: Literal["0", "1"]) -> httpx.Response:
        return self._request(
            "PROPFIND",
            url,
            content=body.encode(),
            headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
        )

    # --- verbs ---------------------------------------------------------------------------

    def check_login(self) -> None:
        """PROPFIND the home: raises SXM-GW-006 when the credentials are refused."""
        response = self._propfind(self.home, _PROP_RESOURCETYPE, depth="0")
        if response.status_code not in (207, 200):
            raise UserError(
                f"DAV home {_path(self.home)} answered {response.status_code} to PROPFIND",
                code="SXM-GW-005",
                user=self.user,
            )

    def collection_url(self, slug: str) -> str:
        return urljoin(self.home, quote(slug) + "/")

    def exists(self, url: str) -> bool:
        response = self._propfind(url, _PROP_RESOURCETYPE, depth="0")
        if response.status_code == 404:
            return False
        if response.status_code in (207, 200):
            return True
        raise UserError(
            f"PROPFIND {_path(url)} answered {response.status_code}",
            code="SXM-GW-005",
            user=self.user,
        )

    def ensure_collection(
        self, slug: str, display_name: str, *, components: tuple[str, ...] = ("VEVENT", "VTODO")
    ) -> str:
        """The collection's URL, created (calendar or address book) when it is missing."""
        url = self.collection_url(slug)
        if self.exists(url):
            return url
        name = _xml_text(display_name)
        if self.kind == "caldav":
            comps = "".join(f'<c:comp name="{c}"/>' for c in components)
            body = (
                '<?xml version="1.0" encoding="utf-8"?>'
                f'<c:mkcalendar xmlns:d="DAV:" xmlns:c="{_NS["c"]}"><d:set><d:prop>'
                f"<d:displayname>{name}</d:displayname>"
                f"<c:supported-calendar-component-set>{comps}</c:supported-calendar-component-set>"
                "</d:prop></d:set></c:mkcalendar>"
            )
            method = "MKCALENDAR"
        else:
            body = (
                '<?xml version="1.0" encoding="utf-8"?>'
                f'<d:mkcol xmlns:d="DAV:" xmlns:a="{_NS["a"]}"><d:set><d:prop>'
                "<d:resourcetype><d:collection/><a:addressbook/></d:resourcetype>"
                f"<d:displayname>{name}</d:displayname></d:prop></d:set></d:mkcol>"
            )
            method = "MKCOL"
        response = self._request(
            method,
            url,
            content=body.encode("utf-8"),
            headers={"Content-Type": "application/xml; charset=utf-8"},
        )
        # 405: it appeared meanwhile (another worker, or a retried request that had landed).
        if response.status_code not in (201, 200, 207) and not (
            response.status_code == 405 and self.exists(url)
        ):
            raise UserError(
                f"{method} {_path(url)} answered {response.status_code}",
                code="SXM-GW-005",
                user=self.user,
            )
        return url

    def create(self, url: str, data: bytes, content_type: str) -> str | None:
        """PUT a new resource; ``None`` when one of that name exists already (412), else
        its ETag (or an empty string when the server gives none)."""
        response = self._request(
            "PUT",
            url,
            content=data,
            headers={"Content-Type": content_type, "If-None-Match": "*"},
        )
        if response.status_code == 412:
            return None
        self._accepted(response, url)
        return str(response.headers.get("ETag", ""))

    def replace(self, url: str, data: bytes, content_type: str, etag: str | None) -> str:
        """PUT over an existing resource, only if it is still the version ``etag`` names."""
        headers = {"Content-Type": content_type}
        if etag:
            headers["If-Match"] = etag
        response = self._request("PUT", url, content=data, headers=headers)
        if response.status_code == 412:
            raise ItemError(
                f"{_path(url)} changed on the server since it was migrated: not overwritten",
                code="SXM-GW-004",
                user=self.user,
            )
        self._accepted(response, url)
        return str(response.headers.get("ETag", ""))

    def _accepted(self, response: httpx.Response, url: str) -> None:
        if response.status_code in (200, 201, 204):
            return
        if response.status_code in (401, 403):
            raise UserError(
                f"DAV server refused PUT {_path(url)} (HTTP {response.status_code})",
                code="SXM-GW-006",
                user=self.user,
            )
        raise ItemError(
            f"DAV server refused {_path(url)} (HTTP {response.status_code})",
            code="SXM-GW-004",
            user=self.user,
        )

    def fetch(self, url: str) -> Fetched | None:
        """GET a resource and its ETag; ``None`` when there is none of that name."""
        response = self._request("GET", url, headers={})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ItemError(
                f"GET {_path(url)} answered {response.status_code}",
                code="SXM-GW-004",
                user=self.user,
            )
        return Fetched(response.content, response.headers.get("ETag"))

    def list_etags(self, collection: str) -> dict[str, str]:
        """Member name -> ETag of one collection (PROPFIND depth 1)."""
        response = self._propfind(collection, _PROP_ETAG, depth="1")
        if response.status_code == 404:
            return {}
        if response.status_code != 207:
            raise UserError(
                f"PROPFIND {_path(collection)} answered {response.status_code}",
                code="SXM-GW-005",
                user=self.user,
            )
        out: dict[str, str] = {}
        base = urlsplit(collection).path.rstrip("/")
        for href, etag in _etags(response.content):
            path = unquote(urlsplit(href).path).rstrip("/")
            if path == unquote(base) or not etag:
                continue
            out[path.rsplit("/", 1)[-1]] = etag
        return out

    def collections(self) -> list[str]:
        """The names of the collections under the user's home (PROPFIND depth 1)."""
        response = self._propfind(self.home, _PROP_RESOURCETYPE, depth="1")
        if response.status_code != 207:
            return []
        base = unquote(urlsplit(self.home).path).rstrip("/")
        out: list[str] = []
        for item in _parse_xml(response.content).iter("{DAV:}response"):
            path = unquote(urlsplit(item.findtext("{DAV:}href") or "").path).rstrip("/")
            if path != base and item.find(".//{DAV:}resourcetype/{DAV:}collection") is not None:
                out.append(path.rsplit("/", 1)[-1])
        return sorted(out)

    def delete(self, url: str) -> None:
        response = self._request("DELETE", url, headers={})
        if response.status_code not in (200, 204, 404):
            raise UserError(
                f"DELETE {_path(url)} answered {response.status_code}",
                code="SXM-GW-005",
                user=self.user,
            )

    def max_resource_size(self, collection: str) -> int | None:
        """The collection's ``max-resource-size`` (RFC 4791 §5.2.5 / RFC 6352 §6.2.3), if told."""
        ns = "c" if self.kind == "caldav" else "a"
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
            f'xmlns:{ns}="{_NS[ns]}"><d:prop><{ns}:max-resource-size/></d:prop></d:propfind>'
        )
        response = self._propfind(collection, body, depth="0")
        if response.status_code != 207:
            return None
        root = _parse_xml(response.content)
        for el in root.iter(f"{{{_NS[ns]}}}max-resource-size"):
            text = (el.text or "").strip()
            if text.isdigit():
                return int(text)
        return None


_PROP_RESOURCETYPE = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<d:propfind xmlns:d="DAV:"><d:prop><d:resourcetype/></d:prop></d:propfind>'
)
_PROP_ETAG = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>'
)


def _parse_xml(data: bytes) -> ET.Element:
    # Multistatus bodies come from the server we write to; no entities are expanded by ET.
    try:
        return ET.fromstring(data)  # noqa: S314
    except ET.ParseError:
        return ET.Element("empty")


def _etags(data: bytes) -> Iterator[tuple[str, str]]:
    for response in _parse_xml(data).iter("{DAV:}response"):
        href = response.findtext("{DAV:}href") or ""
        etag = ""
        for propstat in response.iter("{DAV:}propstat"):
            if "200" in (propstat.findtext("{DAV:}status") or ""):
                etag = propstat.findtext("{DAV:}prop/{DAV:}getetag") or etag
        yield href, etag


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _path(url: str) -> str:
    """A URL's path only: a URL may carry credentials or a token in its query."""
    return urlsplit(url).path or "/"
