"""Scalix admin commands, emulated over the directory model (both Scalix stand-ins use this).

``run(argv, directory_path)`` executes one command (``argv[0]`` is the basename, e.g.
``omshowu``) against the JSON directory (:mod:`scalix_migrate.sandbox.directory`) and returns a
:class:`CommandResult`. ``python -m scalix_migrate.sandbox.admin_commands <cmd> [args…]`` does
the same with the directory named by ``$SXM_SANDBOX_DIRECTORY`` (the sshd test bed's wrapper
scripts call it). ``argv`` never passes through a shell here: a user called
``o'brien; touch /tmp/x`` is only a name.

Output formats (reference/scalix.md §1 and §7; only the PARSER-CONFIRMED parts are known to be
Scalix's own, the rest is this stand-in's choice and is kept stable for the parsers):

``omshowu -m all`` / ``omshowu -m <mailnode>``
    one line per user, ``Display Name/mailnode/CN=Display Name``; an unknown mailnode exits 1.
``omshowu -n NAME -f``
    ``Key: value`` lines, in this order::

        User Name: Kim Lee/mail1/CN=Kim Lee
        Display Name: Kim Lee
        Mailnode: mail1
        Mail Account: Unlocked            (or Locked)
        Authentication ID: kim@example.test
        Internet Address: kim@example.test (one line per address, Scalix's order: primary first)
        Class: Full                       (or Limited)
        Admin Capabilities: mboxadmin     (comma-separated; "None" when there are none)
        Full Administrator: Yes           (or No; left out when the directory says None)
        Message Store: Yes                (or No)

    NAME may be the display name, ``Display/mailnode``, ``Display/mailnode/CN=Display``, the
    authentication ID or any address. Without ``-f`` only ``User Name`` and ``Mail Account``
    are printed. Unknown user: exit 1, ``omshowu: user "NAME" not found`` on stderr.
``ommodu -o NAME -c +cap|-cap`` / ``ommodu -o NAME -K`` (lock) / ``ommodu -o NAME -k`` (unlock)
    silent on success (the lock flags are this stand-in's choice, INFERRED in scalix.md §1.6).
``omstat -a`` / ``omstat -s``
    ``<Service Name padded to 32> <State padded to 9> <date dd.mm.yy> [<n>]`` where State is
    Enabled|Started|Stopped|Disabled and ``n`` (number of sub-processes) follows Started
    services only. ``-a`` lists every service, ``-s`` the daemons (those whose normal state is
    Started). ``omstat -q <queue>`` prints nothing (the queues are empty).
``omstat -u rci -c``
    one line per open client session: ``<User Name>/CN=<Display>  <kind>  <pid>``, where kind
    is the session text from the directory (``IMAP client``, ``SWA client``, …).
``omoff -d 0 <service|alias>…`` / ``omon <service|alias>…`` / ``omon -s all``
    services by full name (case-insensitive) or alias: ``imap``, ``pop3``, ``rci``, ``smtp``,
    ``ld``/``local``, ``router``, ``sm``, ``req``, ``dirsync``, ``all``. ``omoff`` turns an
    ``Enabled`` service ``Disabled`` and a ``Started`` one ``Stopped``; ``omon`` restores the
    normal state. Taking IMAP or RCI off drops that kind of session. Silent on success.
``omlimit -u NAME -r``
    ``Message Store Size Limit: <N>kb`` (0 = unlimited).
``sxdu -a NAME``
    ``<kib>\\t<Display/mailnode>``.
``omshowmn``
    ``**      <mailnode>`` for the primary, ``        <mailnode>`` for the others.
``omcheckgc -d``
    ``/var/opt/scalix/<first+last letter of the short hostname>/s``.
``service scalix start|stop|restart|status``, ``service scalix-tomcat start|stop|restart|status``
    ``start``/``restart`` bring every service to its normal state except the directory's
    ``broken_services``, which stay Stopped (and drop all sessions); ``stop`` stops all. Status
    exits 0 when everything runs, 3 when all is stopped, 1 when only part runs (listing the
    stopped services). Tomcat's state is ``Directory.tomcat_state``; stopping it drops
    ``SWA client`` sessions.

Unknown commands exit 127, bad usage exits 2, both with a message on stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import getopt
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from scalix_migrate.sandbox.directory import (
    DEFAULT_SERVICES,
    Directory,
    DirectoryUser,
    locked_directory,
)

DIRECTORY_ENV = "SXM_SANDBOX_DIRECTORY"

SERVICE_ALIASES: dict[str, str] = {
    "imap": "IMAP Server",
    "pop3": "POP3 Interface",
    "rci": "Remote Client Interface",
    "smtp": "SMTP Relay",
    "ld": "Local Delivery",
    "local": "Local Delivery",
    "router": "Service Router",
    "sm": "Session Monitor",
    "req": "Request Server",
    "dirsync": "Directory Relay Server",
}

# Which client sessions disappear when a service goes down.
_SESSIONS_OF_SERVICE = {"IMAP Server": "IMAP client", "Remote Client Interface": "Outlook client"}


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class _Usage(Exception):
    """Bad arguments: exit 2 with the message."""


class _Failure(Exception):
    """The command ran and failed (unknown user, service…): exit 1 with the message."""


def run(argv: list[str], directory_path: Path) -> CommandResult:
    """Run one admin command against the directory at ``directory_path``."""
    if not argv:
        return CommandResult(2, "", "usage: <command> [args...]\n")
    name = os.path.basename(argv[0])
    handler = _COMMANDS.get(name)
    if handler is None:
        return CommandResult(127, "", f"{name}: command not found\n")
    try:
        out = handler(argv[1:], Path(directory_path))
    except _Usage as exc:
        return CommandResult(2, "", f"{name}: {exc}\n")
    except _Failure as exc:
        return CommandResult(1, "", f"{name}: {exc}\n")
    except getopt.GetoptError as exc:
        return CommandResult(2, "", f"{name}: {exc.msg}\n")
    if isinstance(out, CommandResult):
        return out
    return CommandResult(0, "".join(f"{line}\n" for line in out), "")


# --- helpers ---------------------------------------------------------------------------------


def _user(directory: Directory, identity: str) -> DirectoryUser:
    user = directory.find(identity)
    if user is None:
        raise _Failure(f'user "{identity}" not found')
    return user


def _indexed_user(snap: _Snapshot, identity: str) -> DirectoryUser:
    """:func:`_user` in O(1): the snapshot's index, checked against ``matches``; a miss (or a
    form the index does not know) falls back to the directory's own linear ``find``."""
    user = snap.index.get(identity.strip().lower())
    if user is not None and user.matches(identity):
        return user
    return _user(snap.directory, identity)


def _full_name(user: DirectoryUser) -> str:
    return f"{user.name}/CN={user.display_name}"


def _today() -> str:
    return datetime.now(UTC).strftime("%d.%m.%y")


def _resolve_services(names: list[str], directory: Directory) -> list[str]:
    if not names:
        raise _Usage("no service named")
    resolved: list[str] = []
    for raw in names:
        key = raw.strip().lower()
        if key == "all":
            resolved.extend(directory.services)
            continue
        full = SERVICE_ALIASES.get(key)
        if full is None:
            full = next((s for s in directory.services if s.lower() == key), None)
        if full is None or full not in directory.services:
            raise _Failure(f'unknown service "{raw}"')
        resolved.append(full)
    return list(dict.fromkeys(resolved))


def _normal_state(service: str) -> str:
    return DEFAULT_SERVICES.get(service, "Started")


def _drop_sessions(directory: Directory, kind: str | None) -> None:
    for user in directory.users:
        user.sessions = [] if kind is None else [s for s in user.sessions if s != kind]


def _bring_up(directory: Directory, services: list[str], *, honour_broken: bool) -> None:
    for service in services:
        if honour_broken and service in directory.broken_services:
            directory.services[service] = "Stopped"
            continue
        directory.services[service] = _normal_state(service)
        directory.service_dates[service] = _today()


def _take_down(directory: Directory, services: list[str]) -> None:
    for service in services:
        directory.services[service] = (
            "Disabled" if _normal_state(service) == "Enabled" else "Stopped"
        )
        kind = _SESSIONS_OF_SERVICE.get(service)
        if kind is not None:
            _drop_sessions(directory, kind)


# --- the parsed directory, cached per file version ------------------------------------------
#
# Discovery sends three commands per user; re-parsing the whole JSON for each made a batch
# cost O(users) per command, O(users^2) overall. A read-only command now reuses the parsed
# Directory (and an index of every name form) while the file is the same version.
#
# The version key is (st_dev, st_ino, st_mtime_ns, st_size). Every writer replaces the file
# atomically (Directory.save: mkstemp + os.replace), so a write gives a new inode. The cache
# keeps the cached version's file OPEN: its inode cannot be freed, hence never reused by a later
# version, so a replaced file always has a different key even when the mtime tick and the size
# are the same. Writes through this module also drop the entry explicitly.
# Handlers must not mutate a snapshot's Directory: the writing commands load their own copy
# through locked_directory(write=True).

_CACHE_SIZE = 4  # directory files remembered per process (a test session has a few)


@dataclass
class _Snapshot:
    key: tuple[int, int, int, int]
    directory: Directory
    index: dict[str, DirectoryUser] = field(repr=False)
    pinned: BinaryIO = field(repr=False)  # the open file that keeps the inode alive


_cache: dict[str, _Snapshot] = {}
_cache_lock = threading.Lock()


def _forms(user: DirectoryUser) -> list[str]:
    """The lower-cased identities :meth:`DirectoryUser.matches` accepts (index keys)."""
    return [
        user.display_name.lower(),
        user.name.lower(),
        user.auth_id.lower(),
        f"{user.name}/CN={user.display_name}".lower(),
        *(a.lower() for a in user.addresses),
    ]


def _index(directory: Directory) -> dict[str, DirectoryUser]:
    index: dict[str, DirectoryUser] = {}
    for user in reversed(directory.users):  # earlier users overwrite: the first wins, as in find
        index.update(dict.fromkeys(_forms(user), user))
    return index


def _load_snapshot(path: Path) -> _Snapshot:
    fh = open(path, "rb")  # noqa: SIM115 (kept open on purpose: see the comment above)
    try:
        st = os.fstat(fh.fileno())
        directory = Directory.from_json(fh.read().decode("utf-8"))
    except BaseException:
        fh.close()
        raise
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    return _Snapshot(key, directory, _index(directory), fh)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[_Snapshot]:
    """The directory at ``path`` for a read-only command.

    A cached version is used without the file lock: writers replace the file atomically, so
    a reader sees the version before or after a write, never a mix. Loading a new version
    takes the shared lock, as :func:`locked_directory` does."""
    path = Path(path)
    name = os.fspath(path)
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        snap = _cache.get(name)
    if snap is not None and snap.key == key:
        yield snap
        return
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            fresh = _load_snapshot(path)
            with _cache_lock:
                _drop(name)
                if len(_cache) >= _CACHE_SIZE:
                    _drop(next(iter(_cache)))
                _cache[name] = fresh
            yield fresh
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _drop(name: str) -> None:
    snap = _cache.pop(name, None)
    if snap is not None:
        snap.pinned.close()


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[Directory]:
    """:func:`locked_directory` for writing, forgetting the cached version afterwards."""
    try:
        with locked_directory(path, write=True) as d:
            yield d
    finally:
        with _cache_lock:
            _drop(os.fspath(Path(path)))


# --- commands --------------------------------------------------------------------------------


def _omshowu(args: list[str], path: Path) -> list[str]:
    opts, rest = getopt.getopt(args, "m:n:f")
    if rest:
        raise _Usage(f"unexpected argument {rest[0]!r}")
    o = dict(opts)
    with _reading(path) as snap:
        d = snap.directory
        if "-m" in o:
            node = o["-m"]
            if node.lower() != "all" and node.lower() not in (m.lower() for m in d.mailnodes):
                raise _Failure(f'mailnode "{node}" not found')
            return [
                _full_name(u)
                for u in d.users
                if node.lower() == "all" or u.mailnode.lower() == node.lower()
            ]
        if "-n" not in o:
            raise _Usage("usage: omshowu -m all|<mailnode> | omshowu -n <name> [-f]")
        u = _indexed_user(snap, o["-n"])
    lines = [f"User Name: {_full_name(u)}"]
    if "-f" in o:
        lines += [f"Display Name: {u.display_name}", f"Mailnode: {u.mailnode}"]
    lines.append(f"Mail Account: {'Locked' if u.locked else 'Unlocked'}")
    if "-f" in o:
        lines.append(f"Authentication ID: {u.auth_id}")
        lines += [f"Internet Address: {a}" for a in u.addresses]
        lines += [
            f"Class: {u.user_class}",
            f"Admin Capabilities: {', '.join(u.capabilities) or 'None'}",
        ]
        if u.full_admin is not None:  # None: a server that prints no such line
            lines.append(f"Full Administrator: {'Yes' if u.full_admin else 'No'}")
        lines.append(f"Message Store: {'Yes' if u.has_message_store else 'No'}")
    return lines


def _ommodu(args: list[str], path: Path) -> list[str]:
    opts, rest = getopt.getopt(args, "o:c:Kk")
    if rest:
        raise _Usage(f"unexpected argument {rest[0]!r}")
    if not any(k == "-o" for k, _ in opts) or len(opts) < 2:
        raise _Usage("usage: ommodu -o <user> [-c +cap|-cap]... [-K|-k]")
    with _writing(path) as d:
        u = _user(d, next(v for k, v in opts if k == "-o"))
        for key, value in opts:
            if key == "-c":
                if len(value) < 2 or value[0] not in "+-":
                    raise _Usage(f"capability must be +name or -name, got {value!r}")
                cap = value[1:]
                if value[0] == "+" and cap not in u.capabilities:
                    u.capabilities.append(cap)
                elif value[0] == "-":
                    u.capabilities = [c for c in u.capabilities if c != cap]
            elif key == "-K":
                u.locked = True
                u.sessions = []  # a locked account's sessions are closed
            elif key == "-k":
                u.locked = False
    return []


def _service_lines(d: Directory, names: list[str], fallback_date: str) -> list[str]:
    lines = []
    for name in names:
        state = d.services[name]
        date = d.service_dates.get(name, fallback_date)
        subs = "  1" if state == "Started" else ""
        lines.append(f"{name:<32} {state:<9} {date}{subs}")
    return lines


def _omstat(args: list[str], path: Path) -> list[str]:
    opts, rest = getopt.getopt(args, "asu:cq:")
    if rest:
        raise _Usage(f"unexpected argument {rest[0]!r}")
    o = dict(opts)
    if "-q" in o:
        return []
    fallback = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%d.%m.%y")
    with _reading(path) as snap:
        d = snap.directory
        if "-u" in o:
            if o["-u"].lower() != "rci":
                raise _Failure(f'unknown subsystem "{o["-u"]}"')
            return [
                f"{_full_name(u)}  {kind}  {4000 + i * 10 + j}"
                for i, u in enumerate(d.users)
                for j, kind in enumerate(u.sessions)
            ]
        if "-a" in o:
            return _service_lines(d, list(d.services), fallback)
        if "-s" in o:
            daemons = [s for s in d.services if _normal_state(s) == "Started"]
            return _service_lines(d, daemons, fallback)
    raise _Usage("usage: omstat -a | -s | -u rci -c | -q <queue>")


def _omoff(args: list[str], path: Path) -> list[str]:
    opts, rest = getopt.getopt(args, "d:s:w")
    names = [v for k, v in opts if k == "-s"] + rest
    with _writing(path) as d:
        _take_down(d, _resolve_services(names, d))
    return []


def _omon(args: list[str], path: Path) -> list[str]:
    opts, rest = getopt.getopt(args, "s:w")
    names = [v for k, v in opts if k == "-s"] + rest
    with _writing(path) as d:
        _bring_up(d, _resolve_services(names, d), honour_broken=False)
    return []


def _omlimit(args: list[str], path: Path) -> list[str]:
    opts, rest = getopt.getopt(args, "u:r")
    o = dict(opts)
    if rest or "-u" not in o or "-r" not in o:
        raise _Usage("usage: omlimit -u <user> -r")
    with _reading(path) as snap:
        u = _indexed_user(snap, o["-u"])
    return [f"Message Store Size Limit: {u.store_limit_kib}kb"]


def _sxdu(args: list[str], path: Path) -> list[str]:
    opts, rest = getopt.getopt(args, "a:")
    o = dict(opts)
    if rest or "-a" not in o:
        raise _Usage("usage: sxdu -a <user>")
    with _reading(path) as snap:
        u = _indexed_user(snap, o["-a"])
    return [f"{u.mailbox_kib}\t{u.name}"]


def _omshowmn(args: list[str], path: Path) -> list[str]:
    if args:
        raise _Usage(f"unexpected argument {args[0]!r}")
    with _reading(path) as snap:
        return [
            f"{'**' if i == 0 else '  '}      {m}" for i, m in enumerate(snap.directory.mailnodes)
        ]


def _omcheckgc(args: list[str], path: Path) -> list[str]:
    if args != ["-d"]:
        raise _Usage("usage: omcheckgc -d")
    with _reading(path) as snap:
        short = snap.directory.hostname.split(".")[0]
    return [f"/var/opt/scalix/{short[0]}{short[-1]}/s"]


def _service(args: list[str], path: Path) -> CommandResult:
    if len(args) != 2 or args[1] not in ("start", "stop", "restart", "status"):
        raise _Usage("usage: service scalix|scalix-tomcat start|stop|restart|status")
    script, action = args
    if script not in ("scalix", "scalix-tomcat"):
        raise _Failure(f"{script}: unrecognized service")
    opened = _writing(path) if action != "status" else locked_directory(path, write=False)
    with opened as d:
        if script == "scalix-tomcat":
            return _tomcat(d, action)
        everything = list(d.services)
        if action == "stop":
            _take_down(d, everything)
            for s in everything:
                d.services[s] = "Stopped"
            _drop_sessions(d, None)
        elif action in ("start", "restart"):
            _drop_sessions(d, None)
            _bring_up(d, everything, honour_broken=True)
        down = [s for s, st in d.services.items() if st not in ("Started", "Enabled")]
    verb = {"start": "Starting", "stop": "Stopping", "restart": "Restarting"}.get(action)
    if verb is not None:
        return CommandResult(0, f"{verb} Scalix services: done\n", "")
    if not down:
        return CommandResult(0, "Scalix services are running\n", "")
    if len(down) == len(d.services):
        return CommandResult(3, "Scalix services are stopped\n", "")
    listing = "".join(f"  {s}: {d.services[s]}\n" for s in down)
    return CommandResult(1, f"Scalix services partly running; not running:\n{listing}", "")


def _tomcat(d: Directory, action: str) -> CommandResult:
    if action == "status":
        running = d.tomcat_state == "Started"
        return CommandResult(
            0 if running else 3, f"scalix-tomcat is {'running' if running else 'stopped'}\n", ""
        )
    if action == "stop":
        d.tomcat_state = "Stopped"
        _drop_sessions(d, "SWA client")
    else:
        d.tomcat_state = "Started"
    return CommandResult(0, f"{action.capitalize()} scalix-tomcat: done\n", "")


_Handler = Callable[[list[str], Path], "list[str] | CommandResult"]

_COMMANDS: dict[str, _Handler] = {
    "omshowu": _omshowu,
    "ommodu": _ommodu,
    "omstat": _omstat,
    "omoff": _omoff,
    "omon": _omon,
    "omlimit": _omlimit,
    "sxdu": _sxdu,
    "omshowmn": _omshowmn,
    "omcheckgc": _omcheckgc,
    "service": _service,
}

COMMAND_NAMES = frozenset(_COMMANDS)


def main(argv: list[str] | None = None) -> int:
    """Console entry: ``python -m scalix_migrate.sandbox.admin_commands <cmd> [args…]``."""
    args = sys.argv[1:] if argv is None else argv
    directory = os.environ.get(DIRECTORY_ENV)
    if not directory:
        sys.stderr.write(f"admin_commands: set {DIRECTORY_ENV} to the directory JSON file\n")
        return 2
    result = run(args, Path(directory))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
