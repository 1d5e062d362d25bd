"""Tolerant parsers for Scalix admin-command output (formats: reference/scalix.md §1, §7).

Only the shapes marked CONFIRMED/PARSER-CONFIRMED are relied on; everything else is tolerated:
keys are matched case-insensitively with whitespace collapsed, ``Key: value`` and ``Key = value``
both work (the separator is whichever of ``:``/``=`` comes first, so values may contain either),
unknown keys are kept in ``fields``, and a line that cannot be parsed is returned in
``unparsed`` with its text — never dropped. Blank lines and ruler lines (``----``) are layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from scalix_migrate.records import ScalixUser

_RULER = re.compile(r"^[\s\-=_*+|]*$")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9 _\-/().']*$")
_HEALTHY = {"enabled", "started"}
_STATES = {"enabled", "started", "stopped", "disabled", "starting", "stopping", "partial"}


def _layout(line: str) -> bool:
    return not line.strip() or bool(_RULER.match(line))


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def normalise_key(key: str) -> str:
    """``'  Internet   ADDRESS '`` -> ``'internet address'``."""
    return " ".join(key.replace("_", " ").split()).lower()


def normalise_mailnode(mailnode: str) -> str:
    """Positional mailnode, lowercased, no spaces around commas (``'Scalix, Demo'``)."""
    return ",".join(p.strip() for p in mailnode.split(",")).lower()


# --- omshowu -m all -------------------------------------------------------------------------


@dataclass(frozen=True)
class UserListEntry:
    display_name: str
    mailnode: str
    raw: str

    @property
    def name(self) -> str:
        return f"{self.display_name}/{self.mailnode}"


@dataclass(frozen=True)
class UserList:
    entries: list[UserListEntry]
    unparsed: list[str]


def _mailnode_from(parts: list[str]) -> str | None:
    """Positional (``scalix,demo``) or tagged (``OU1=scalix/OU2=demo``) mailnode."""
    if not parts:
        return None
    if "=" not in parts[0]:
        return parts[0].strip() or None
    ous = []
    for p in parts:
        tag, _, value = p.partition("=")
        if re.fullmatch(r"\s*OU[1-4]\s*", tag, re.IGNORECASE):
            ous.append(value.strip())
    return ",".join(ous) or None


def split_user_name(text: str) -> tuple[str, str | None]:
    """``Display/mailnode/CN=Display`` -> (display, mailnode); mailnode None if not found.

    Scalix's O/R names cannot contain ``/``, but when the ``CN=`` part repeats the display
    name, that repetition is trusted, so a name with ``/`` in it still comes out whole.
    """
    text = text.strip()
    cn = re.search(r"/CN=", text, re.IGNORECASE)
    if cn is not None:
        display = text[cn.end() :].strip()
        if display and text.startswith(display + "/"):
            middle = text[len(display) + 1 : cn.start()]
            return display, _mailnode_from(middle.split("/"))
    parts = text.split("/")
    return parts[0].strip(), _mailnode_from(parts[1:])


def parse_user_list(text: str) -> UserList:
    """``omshowu -m all``: ``Display Name/mailnode/CN=Display Name`` per line."""
    entries: list[UserListEntry] = []
    unparsed: list[str] = []
    for line in text.splitlines():
        if _layout(line):
            continue
        display, mailnode = split_user_name(line)
        if not display or mailnode is None:
            unparsed.append(line)
            continue
        entries.append(UserListEntry(display, mailnode, line))
    return UserList(entries, unparsed)


# --- omshowu -n NAME -f ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValues:
    """``Key: value`` lines in order; ``fields`` keeps the keys as printed."""

    fields: list[tuple[str, str]]
    unparsed: list[str]

    def get_all(self, *keys: str) -> list[str]:
        wanted = {normalise_key(k) for k in keys}
        return [v for k, v in self.fields if normalise_key(k) in wanted]

    def get(self, *keys: str) -> str | None:
        found = self.get_all(*keys)
        return found[0] if found else None


def parse_key_values(text: str) -> KeyValues:
    """Lines of ``Key: value`` or ``Key = value``; values may contain ``:``, ``=`` and ``/``."""
    fields: list[tuple[str, str]] = []
    unparsed: list[str] = []
    for line in text.splitlines():
        if _layout(line):
            continue
        cut = [i for i in (line.find(":"), line.find("=")) if i > 0]
        if not cut:
            unparsed.append(line)
            continue
        i = min(cut)
        key = line[:i].strip()
        if not _KEY.match(key):
            unparsed.append(line)
            continue
        fields.append((" ".join(key.split()), line[i + 1 :].strip()))
    return KeyValues(fields, unparsed)


_ADDRESS_KEYS = (
    "internet address",
    "internet addresses",
    "email address",
    "e-mail address",
    "smtp address",
    "mail address",
)
_AUTH_KEYS = ("authentication id", "auth id", "authid", "authentication name", "login id")
_CLASS_KEYS = ("class", "user class", "type", "user type", "license class")
_CAP_KEYS = ("admin capabilities", "capabilities", "admin capability", "capability")
_FULL_ADMIN_KEYS = ("full administrator", "is full administrator", "full admin")
_STORE_KEYS = ("message store", "message store exists", "has message store")
_LOCK_KEYS = ("mail account",)
_TRUE = {"yes", "y", "true", "1", "on", "present", "exists"}
_FALSE = {"no", "n", "false", "0", "off", "none", "absent", "missing", "not present"}


def parse_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def parse_lock(value: str | None) -> bool | None:
    """``Mail Account: Unlocked`` -> False; ``Locked`` (or any other text) -> True."""
    if value is None:
        return None
    return value.strip().lower() != "unlocked"


def _split_list(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(p.strip() for p in re.split(r"[,;\s]+", v) if p.strip())
    return out


@dataclass(frozen=True)
class UserDetails:
    user: ScalixUser
    unparsed: list[str]


def parse_user_details(entry: UserListEntry, text: str) -> UserDetails:
    """``omshowu -n NAME -f`` for ``entry`` -> :class:`ScalixUser` (sizes filled in later).

    The display name and mailnode come from ``User Name`` when present (it is authoritative),
    else from the list entry. Addresses keep their printed order: the first is the primary.
    """
    kv = parse_key_values(text)
    display, mailnode = entry.display_name, entry.mailnode
    user_name = kv.get("user name")
    if user_name:
        shown, node = split_user_name(user_name)
        display = shown or display
        mailnode = node or mailnode
    addresses: list[str] = []
    for a in _split_list(kv.get_all(*_ADDRESS_KEYS)):
        if a.lower() not in (x.lower() for x in addresses):
            addresses.append(a)
    caps = frozenset(c.lstrip("+").lower() for c in _split_list(kv.get_all(*_CAP_KEYS)))
    caps -= {"none", "-"}
    details: dict[str, str] = {}
    for k, v in kv.fields:
        details[k] = f"{details[k]}, {v}" if k in details else v
    user = ScalixUser(
        display_name=display,
        mailnode=mailnode,
        auth_id=kv.get(*_AUTH_KEYS) or None,
        addresses=tuple(addresses),
        user_class=kv.get(*_CLASS_KEYS) or None,
        locked=parse_lock(kv.get(*_LOCK_KEYS)),
        has_message_store=parse_bool(kv.get(*_STORE_KEYS)),
        full_admin=parse_bool(kv.get(*_FULL_ADMIN_KEYS)),
        capabilities=caps,
        details=details,
    )
    return UserDetails(user, kv.unparsed)


# --- omlimit / sxdu -------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE | re.ASCII)
_UNIT_KIB = {"": 1, "k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}


def parse_size_kib(value: str) -> int | None:
    """``'100kb'``, ``'100 KB'``, ``'2MB'``, ``'0'`` -> KiB; ``None`` when not a size."""
    m = _SIZE.match(value)
    if not m:
        return None
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    if unit not in _UNIT_KIB:
        return None
    return int(float(m.group(1)) * _UNIT_KIB[unit])


@dataclass(frozen=True)
class Measure:
    kib: int | None
    unparsed: list[str]


def parse_store_limit(text: str) -> Measure:
    """``omlimit -u X -r``: the ``Message Store Size Limit: <N>kb`` line (0 = no limit).

    ``unlimited``/``none`` give 0. Other keys are ignored (they are limits we do not use).
    """
    kv = parse_key_values(text)
    value = kv.get("message store size limit")
    if value is None:
        return Measure(None, kv.unparsed or [ln for ln in text.splitlines() if ln.strip()])
    if value.strip().lower() in {"unlimited", "none", "no limit"}:
        return Measure(0, kv.unparsed)
    kib = parse_size_kib(value)
    return Measure(kib, kv.unparsed if kib is not None else [*kv.unparsed, value])


def parse_sxdu(text: str) -> Measure:
    """``sxdu -a X``: the first whitespace token of the first line is the size in KiB."""
    unparsed: list[str] = []
    for line in text.splitlines():
        if _layout(line):
            continue
        token = line.split()[0]
        if token.isascii() and token.isdigit():  # "²".isdigit() is True, int("²") fails
            return Measure(int(token), unparsed)
        unparsed.append(line)
    return Measure(None, unparsed)


# --- omstat -a / -s -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceState:
    name: str
    state: str
    since: str | None
    subprocesses: int | None

    @property
    def healthy(self) -> bool:
        return self.state.lower() in _HEALTHY


@dataclass(frozen=True)
class ServiceStatus:
    services: list[ServiceState]
    unparsed: list[str]

    def down(self) -> list[ServiceState]:
        return [s for s in self.services if not s.healthy]


def parse_service_status(text: str) -> ServiceStatus:
    """``Service Name  Enabled|Started|Stopped|Disabled  <date> [<#subprocesses>]``.

    The state is the last token that is a known state word, so the date may span tokens.
    Header lines (``Service … State …`` with no state word after the name) are unparsed.
    """
    services: list[ServiceState] = []
    unparsed: list[str] = []
    for line in text.splitlines():
        if _layout(line):
            continue
        tokens = line.split()
        idx = [i for i, t in enumerate(tokens) if t.lower() in _STATES and i > 0]
        if not idx:
            unparsed.append(line)
            continue
        i = idx[-1]
        rest = tokens[i + 1 :]
        subs = int(rest.pop()) if rest and _ascii_digits(rest[-1]) and len(rest) > 1 else None
        services.append(
            ServiceState(" ".join(tokens[:i]), tokens[i].capitalize(), " ".join(rest) or None, subs)
        )
    return ServiceStatus(services, unparsed)


# --- omstat -u rci -c -----------------------------------------------------------------------

_CLIENT = re.compile(r"\b([A-Za-z0-9]+)\s+client\b", re.IGNORECASE)


@dataclass(frozen=True)
class Session:
    client: str  # "IMAP", "SWA", …
    raw: str

    def mentions(self, *names: str | None) -> bool:
        low = self.raw.lower()
        return any(n and n.lower() in low for n in names)


@dataclass(frozen=True)
class Sessions:
    sessions: list[Session]
    unparsed: list[str]


def parse_sessions(text: str) -> Sessions:
    """Connected clients: each line naming ``<Type> client`` is one session (munin's rule)."""
    sessions: list[Session] = []
    unparsed: list[str] = []
    for line in text.splitlines():
        if _layout(line):
            continue
        m = _CLIENT.search(line)
        if m:
            sessions.append(Session(m.group(1).upper(), line.strip()))
        else:
            unparsed.append(line)
    return Sessions(sessions, unparsed)


# --- omshowmn -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mailnodes:
    mailnodes: list[str]
    primary: str | None
    unparsed: list[str] = field(default_factory=list)


def parse_mailnodes(text: str) -> Mailnodes:
    """``**      scalix,demo`` (primary) / ``        scalix,training``."""
    nodes: list[str] = []
    primary = None
    unparsed: list[str] = []
    for line in text.splitlines():
        if _layout(line):
            continue
        stripped = line.strip()
        is_primary = stripped.startswith("**")
        node = stripped.lstrip("*").strip()
        if not node or " " in node.replace(", ", ","):
            unparsed.append(line)
            continue
        nodes.append(node)
        if is_primary:
            primary = node
    return Mailnodes(nodes, primary, unparsed)
