"""Scalix admin commands over one SSH connection (paramiko).

Contract:

* :class:`ScalixAdmin` is a context manager around **one** paramiko connection, reused for every
  command. The server's host key is checked against ``source.ssh.host_key_fingerprint`` when
  pinned, else against ``source.ssh.known_hosts`` (default ``~/.ssh/known_hosts``). An unknown
  key (SXM-SSH-002) or a changed key (SXM-SSH-003) is refused with a :class:`FatalError` whose
  message shows the server's SHA256 fingerprint and how to pin it; nothing is ever auto-added.
* Every command line is a named template (:data:`DEFAULT_TEMPLATES`) that
  ``source.ssh.commands`` can override. Placeholders are ``{bin}`` (``source.ssh.bin_dir``) and
  named parameters; every parameter value is ``shlex.quote``-d before it is put in. The line is
  prefixed with ``OMCURRENT=<v>`` and ``sudo -n`` when configured.
* :meth:`ScalixAdmin.run_batch` sends many commands in one exec as
  ``cmd1; echo "@@SXM@@ $?"; cmd2; echo "@@SXM@@ $?"`` (the subset of sh the sandbox speaks),
  in chunks of at most ``chunk`` commands and :data:`MAX_BATCH_BYTES` bytes, and splits the
  output back into one :class:`CommandResult` per command. With ``parallel > 1`` up to that
  many chunks run at once, each on its own channel of the same connection (sshd's default
  ``MaxSessions`` is 10; :data:`MAX_PARALLEL` caps it below that).
* stdout and stderr are drained together before the exit status is read; every exec is bounded
  by ``source.ssh.command_timeout_s``. Every command line and exit status is logged (command
  lines never carry secrets) and, with a journal, recorded through ``Journal.log_command``.
"""

from __future__ import annotations

import logging
import re
import select
import shlex
import string
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko

from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import ConfigError, FatalError, MigrationError, TransientError
from scalix_migrate.netfaults import note_reconnect
from scalix_migrate.state import Journal

log = logging.getLogger(__name__)

# Scalix's own command names; {bin} is source.ssh.bin_dir. Parameters are quoted on insertion.
DEFAULT_TEMPLATES: dict[str, str] = {
    "omshowu_all": "{bin}/omshowu -m all",
    "omshowu_user": "{bin}/omshowu -n {name} -f",
    "omshowmn": "{bin}/omshowmn",
    "omstat_all": "{bin}/omstat -a",
    "omstat_services": "{bin}/omstat -s",
    "omstat_sessions": "{bin}/omstat -u rci -c",
    "omlimit": "{bin}/omlimit -u {name} -r",
    "sxdu": "{bin}/sxdu -a {name}",
    # Our stand-ins' choice for the per-user lock (scalix.md §1.6: the real flag is unconfirmed).
    "ommodu_lock": "{bin}/ommodu -o {name} -K",
    "ommodu_unlock": "{bin}/ommodu -o {name} -k",
    "omoff": "{bin}/omoff -d 0 {service}",
    "omon": "{bin}/omon {service}",
    "tomcat_status": "service scalix-tomcat status",
    "tomcat_stop": "service scalix-tomcat stop",
    "tomcat_start": "service scalix-tomcat start",
}

BATCH_MARKER = "@@SXM@@"
_MARKER_LINE = re.compile(r"@@SXM@@ (-?\d+)\r?\n?")
# Commands per exec. Fewer execs matter most (each costs a channel, a login shell and, on the
# test bed, an emulator start); the bound keeps one exec of slow real commands (~0.1-0.3 s
# each) well inside source.ssh.command_timeout_s (default 300 s).
DEFAULT_CHUNK = 500
# The whole batch travels as one string: sshd puts it in SSH_ORIGINAL_COMMAND and the login
# shell gets it as one "-c" argument, and Linux caps one such string at 128 KiB
# (MAX_ARG_STRLEN). Half of that leaves room for a wrapper that quotes it again.
MAX_BATCH_BYTES = 64 * 1024
MAX_PARALLEL = 8  # channels at once on one connection (sshd's default MaxSessions is 10)
_BATCH_GLUE = len(f'; echo "{BATCH_MARKER} $?"; ')
_STDERR_KEEP = 4000


@dataclass(frozen=True)
class CommandResult:
    """What one remote command printed and returned (same shape as the sandbox's)."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class BatchItem:
    """One command of a batch: the template name and its parameters."""

    name: str
    params: Mapping[str, str]


def host_key_fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64 without padding>``, as ``ssh-keygen -lf`` prints it."""
    return str(key.fingerprint)


def _normal_fp(fp: str) -> str:
    return fp.strip().rstrip("=")


class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    """Refuse a host that known_hosts does not list, or whose key differs from the pin."""

    def __init__(self, pinned: str | None, known_hosts: Path | None) -> None:
        self.pinned = pinned
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        fp = host_key_fingerprint(key)
        if self.pinned is not None:
            if _normal_fp(fp) == _normal_fp(self.pinned):
                return
            raise FatalError(
                f"SSH host key of {hostname} is {fp} ({key.get_name()}), "
                f"not the pinned {self.pinned}",
                code="SXM-SSH-003",
                remedy="Find out why the key changed (reinstall? another host?) before you set "
                f"source.ssh.host_key_fingerprint: {fp!s}",
            )
        where = self.known_hosts or "~/.ssh/known_hosts"
        raise FatalError(
            f"SSH host key of {hostname} is unknown: {key.get_name()} {fp}; it is not in {where}",
            code="SXM-SSH-002",
            remedy=f"Verify {fp} out of band (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the "
            f"server), then set source.ssh.host_key_fingerprint: {fp} or add the key to {where} "
            "(ssh-keyscan)",
        )


class ScalixAdmin:
    """Run Scalix admin commands over one SSH connection; see the module docstring."""

    def __init__(self, cfg: TenantConfig, *, journal: Journal | None = None) -> None:
        self.cfg = cfg
        self.ssh = cfg.source.ssh
        self.host = cfg.source.ssh_host
        self.journal = journal
        self.templates: dict[str, str] = {**DEFAULT_TEMPLATES, **self.ssh.commands}
        self._client: paramiko.SSHClient | None = None
        # Totals over this object's life (benchmark figures, scale checks): command lines sent
        # (a batch counts each of its commands) and SSH exec channels opened.
        self.commands_sent = 0
        self.execs = 0
        self.reconnects = 0  # connections lost mid-batch and reopened
        # Guards the connection and the counters: run_batch(parallel=N) execs from N threads.
        self._lock = threading.RLock()

    # --- connection -----------------------------------------------------------------

    def __enter__(self) -> ScalixAdmin:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection (idempotent). Raises FatalError/TransientError with SXM-SSH-*."""
        with self._lock:
            self._connect_locked()

    def _connect_locked(self) -> None:
        if self._client is not None and self._transport_alive():
            return
        self.close()
        client = paramiko.SSHClient()
        pinned = self.ssh.host_key_fingerprint
        known = None
        if pinned is None:
            known = Path(self.ssh.known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
            if known.exists():
                client.load_host_keys(str(known))
        client.set_missing_host_key_policy(_RefuseUnknownKey(pinned, known))
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.ssh.port,
            "username": self.ssh.user,
            "timeout": self.ssh.connect_timeout_s,
            "banner_timeout": self.ssh.connect_timeout_s,
            "auth_timeout": self.ssh.connect_timeout_s,
            "channel_timeout": self.ssh.connect_timeout_s,
            "allow_agent": False,
            "look_for_keys": False,
        }
        if self.ssh.key_file is not None:
            kwargs["key_filename"] = str(Path(self.ssh.key_file).expanduser())
        if self.ssh.password is not None:
            kwargs["password"] = self.ssh.password.resolve()
        if self.ssh.key_file is None and self.ssh.password is None:
            kwargs.update(allow_agent=True, look_for_keys=True)
        where = f"{self.ssh.user}@{self.host}:{self.ssh.port}"
        try:
            client.connect(**kwargs)
        except paramiko.BadHostKeyException as exc:
            client.close()
            fp = host_key_fingerprint(exc.key)
            raise FatalError(
                f"SSH host key of {self.host} changed: the server shows {fp}, "
                f"{known} expects {host_key_fingerprint(exc.expected_key)}",
                code="SXM-SSH-003",
                remedy="Find out why the key changed before you trust it; then update "
                f"{known} or pin source.ssh.host_key_fingerprint: {fp}",
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise FatalError(f"SSH authentication as {where} failed", code="SXM-SSH-004") from None
        except FatalError:
            client.close()
            raise
        except (OSError, paramiko.SSHException) as exc:
            client.close()
            raise TransientError(
                f"cannot reach SSH at {where}: {type(exc).__name__}: {exc}", code="SXM-SSH-001"
            ) from None
        self._client = client
        log.info("ssh connected to %s", where)

    def _transport_alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def reconnect(self) -> None:
        self.close()
        self.connect()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- command lines ----------------------------------------------------------------

    def command_line(self, name: str, /, **params: str) -> str:
        """The full command line for template ``name``, values quoted, prefixes added."""
        template = self.templates.get(name)
        if template is None:
            known = ", ".join(sorted(self.templates))
            raise ConfigError(f"no admin command template named {name!r}; known: {known}")
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        missing = fields - {"bin"} - set(params)
        if missing:
            raise ConfigError(
                f"admin command template {name!r} uses {{{', '.join(sorted(missing))}}}, "
                f"which this command does not provide (it provides: {', '.join(sorted(params))})"
            )
        values = {k: shlex.quote(str(v)) for k, v in params.items()}
        line = template.format(bin=shlex.quote(self.ssh.bin_dir.rstrip("/")), **values)
        return self.wrap(line)

    def wrap(self, line: str) -> str:
        """Add the ``OMCURRENT=`` and ``sudo -n`` prefixes the config asks for."""
        prefix = []
        if self.ssh.omcurrent:
            prefix.append(f"OMCURRENT={shlex.quote(self.ssh.omcurrent)}")
        if self.ssh.sudo:
            prefix.append("sudo -n")
        return " ".join([*prefix, line])

    # --- running ------------------------------------------------------------------------

    def run(self, name: str, /, **params: str) -> CommandResult:
        """Run template ``name`` once and return its result (non-zero exits are not raised)."""
        return self.run_line(self.command_line(name, **params))

    def run_line(self, line: str) -> CommandResult:
        """Run a command line that was built by :meth:`command_line` (or recorded from one)."""
        started = time.monotonic()
        with self._lock:
            self.commands_sent += 1
        status, out, err = self._exec(line)
        self._record(line, status, time.monotonic() - started)
        return CommandResult(status, out, err)

    def run_batch(
        self, items: Sequence[BatchItem], *, chunk: int = DEFAULT_CHUNK, parallel: int = 1
    ) -> list[CommandResult]:
        """Run many templated commands, up to ``chunk`` per exec (and :data:`MAX_BATCH_BYTES`);
        one result per item, in order. ``parallel`` chunks run at once on their own channels
        of the one connection (capped at :data:`MAX_PARALLEL`).

        Per-command stderr cannot be told apart inside one exec: a failing item gets the
        chunk's stderr (bounded), a succeeding one an empty string.
        """
        lines = [self.command_line(i.name, **i.params) for i in items]
        groups = _chunks(lines, max(1, chunk))
        workers = max(1, min(parallel, MAX_PARALLEL, len(groups)))
        if workers == 1:
            outcomes = [self._exec_chunk(g) for g in groups]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sxm-ssh") as pool:
                outcomes = list(pool.map(self._exec_chunk, groups))
        results: list[CommandResult] = []
        for group, outcome in zip(groups, outcomes, strict=True):
            results.extend(self._finish_chunk(group, outcome))
        return results

    def _exec_chunk(self, lines: list[str]) -> tuple[list[tuple[int, str]], str, float]:
        """Exec one chunk (thread-safe): each command's (exit status, stdout), the chunk's
        stderr and the seconds it took.

        A connection or channel lost part-way (no exit status came back) is a transient fault,
        not a format problem: the commands whose end marker arrived are kept, the connection
        is reopened and only the rest of the chunk runs again, up to
        ``source.ssh.reconnect_attempts`` times. Scalix's admin commands that are batched read
        or set state idempotently, so the one command that was cut off may safely run twice.
        """
        started = time.monotonic()
        done: list[tuple[int, str]] = []
        errors: list[str] = []
        attempts = self.ssh.reconnect_attempts
        for attempt in range(attempts + 1):
            todo = lines[len(done) :]
            with self._lock:
                self.commands_sent += len(todo)
            try:
                _, out, err = self._exec(_batch_script(todo), logged=False)
            except _ConnectionLost as lost:
                done.extend(_split_batch(lost.stdout[: lost.stdout.rfind("\n") + 1]))
                errors.append(lost.stderr)
                if len(done) >= len(lines):
                    break
                if attempt == attempts:
                    raise TransientError(
                        f"SSH connection to {self.host} was lost {attempts + 1} times during "
                        f"a batch of admin commands; {len(done)} of {len(lines)} finished; "
                        f"first unfinished: {lines[len(done)]}",
                        code="SXM-SSH-007",
                    ) from None
                with self._lock:
                    self.reconnects += 1
                note_reconnect()
                log.warning(
                    "ssh %s: connection lost after %d of %d commands of a batch; reconnecting "
                    "and running the other %d (attempt %d of %d)",
                    self.host,
                    len(done),
                    len(lines),
                    len(lines) - len(done),
                    attempt + 1,
                    attempts,
                )
                continue
            errors.append(err)
            done.extend(_split_batch(out))
            break
        return done, "".join(errors), time.monotonic() - started

    def _finish_chunk(
        self, lines: list[str], outcome: tuple[list[tuple[int, str]], str, float]
    ) -> list[CommandResult]:
        """Record each command's result of a chunk (in the caller's thread)."""
        pieces, err, elapsed = outcome
        if len(pieces) != len(lines):
            # The exec ended with an exit status, yet markers are missing: a template that
            # swallowed the marker (exit, exec, a here-document) or printed one of its own.
            first = lines[min(len(pieces), len(lines) - 1)]
            raise MigrationError(
                f"batched admin output has {len(pieces)} end markers for {len(lines)} commands; "
                f"first command without one: {first}",
                code="SXM-SSH-006",
            )
        results = []
        for line, (code, text) in zip(lines, pieces, strict=True):
            self._record(line, code, elapsed / len(lines))
            results.append(CommandResult(code, text, err[:_STDERR_KEEP] if code else ""))
        return results

    def _record(self, line: str, status: int | None, duration: float) -> None:
        log.info("ssh %s: %s -> exit %s (%.2fs)", self.host, line, status, duration)
        if self.journal is not None:
            self.journal.log_command(self.cfg.tenant, self.host, line, status, duration)

    def _exec(self, line: str, *, logged: bool = True) -> tuple[int, str, str]:
        """Run one exec; drain stdout and stderr together, then read the exit status."""
        with self._lock:  # another thread may reconnect or close meanwhile
            self._connect_locked()
            client = self._client
        assert client is not None
        transport = client.get_transport()
        if transport is None:
            raise TransientError(f"SSH connection to {self.host} was lost", code="SXM-SSH-001")
        timeout = self.ssh.command_timeout_s
        deadline = time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []
        with self._lock:
            self.execs += 1
        try:
            chan = transport.open_session(timeout=self.ssh.connect_timeout_s)
            try:
                chan.settimeout(timeout)
                chan.exec_command(line)
                chan.shutdown_write()
                while True:
                    if chan.recv_ready():
                        out.append(chan.recv(1 << 16))
                        continue
                    if chan.recv_stderr_ready():
                        err.append(chan.recv_stderr(1 << 16))
                        continue
                    if chan.eof_received or chan.closed:
                        if not (chan.recv_ready() or chan.recv_stderr_ready()):
                            break
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError()
                    # The channel's fileno fires on stdout, stderr and EOF alike.
                    select.select([chan], [], [], min(remaining, 1.0))
                if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError()
                if chan.exit_status == -1:
                    # paramiko sets status_event on close too; a real exit status is 0-255.
                    raise EOFError("the channel closed without an exit status")
                status = chan.recv_exit_status()
            finally:
                chan.close()
        except TimeoutError:
            if logged:
                self._record(line, None, timeout)
            raise TransientError(
                f"admin command timed out after {timeout:.0f}s on {self.host}: {line[:200]}",
                code="SXM-SSH-008",
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise _ConnectionLost(
                f"SSH connection to {self.host} was lost during a command "
                f"({type(exc).__name__}: {exc}): {line[:200]}",
                stdout=_decode(out),
                stderr=_decode(err),
            ) from None
        return status, _decode(out), _decode(err)


class _ConnectionLost(TransientError):
    """The connection or channel went away before the exit status: what had arrived is kept."""

    def __init__(
        self, message: str, *, stdout: str = "", stderr: str = "", code: str = "SXM-SSH-007"
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(message, code=code)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled (Prefect results) as what it is to the caller: a transient error.
        return (_transient, (self.message, self.code))


def _transient(message: str, code: str) -> TransientError:
    return TransientError(message, code=code)


def _decode(chunks: list[bytes]) -> str:
    # Admin output is mostly ASCII; odd bytes (a Latin-1 display name) must not stop parsing.
    return b"".join(chunks).decode("utf-8", "replace")


def _batch_script(lines: list[str]) -> str:
    return "; ".join(f'{line}; echo "{BATCH_MARKER} $?"' for line in lines)


def _chunks(lines: list[str], chunk: int) -> list[list[str]]:
    """Group command lines: at most ``chunk`` per group and :data:`MAX_BATCH_BYTES` per
    script (a single longer line still gets a group of its own)."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        cost = len(line.encode()) + _BATCH_GLUE
        if current and (len(current) >= chunk or size + cost > MAX_BATCH_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(line)
        size += cost
    if current:
        groups.append(current)
    return groups


def _split_batch(out: str) -> list[tuple[int, str]]:
    """Split a batch's stdout at the ``@@SXM@@ <status>`` markers."""
    pieces: list[tuple[int, str]] = []
    pos = 0
    for m in _MARKER_LINE.finditer(out):
        pieces.append((int(m.group(1)), out[pos : m.start()]))
        pos = m.end()
    return pieces
