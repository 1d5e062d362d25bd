"""Errors, classed by what the caller should do about them.

::

    MigrationError                 every error we raise; carries a stable code from CATALOGUE,
    │                              the user/folder/uid it concerns, and never a secret
    ├── ConfigError                fix the YAML (file, line, field, what was expected)
    ├── PreflightError             a blocking preflight finding; nothing has moved
    ├── TransientError             network, timeout, throttling: retry (Prefect retries these)
    ├── ItemError                  one message was rejected: record it, go on with the rest
    ├── UserError                  this user fails, the tenant goes on
    └── FatalError                 stop the whole tenant

Each code in ``CATALOGUE`` (these errors' and the preflight findings' of
:mod:`scalix_migrate.codes`) has a one-line remedy; docs/codes.md lists them all. Messages are
built from names and codes only: a password, token or message body never goes into one.
"""

from __future__ import annotations

from scalix_migrate.codes import PREFLIGHT_CODES, Code

_CODES = [
    # configuration
    Code("SXM-CFG-001", "invalid tenant config", "Fix the field named in the message."),
    Code(
        "SXM-CFG-002",
        "secret not resolvable",
        "Set the environment variable, create the file, "
        "or create the Prefect Secret block the reference names.",
    ),
    # source: SSH / admin commands
    Code(
        "SXM-SSH-001",
        "SSH unreachable",
        "Check source.ssh.host/port, firewalls and that sshd runs.",
    ),
    Code(
        "SXM-SSH-002",
        "SSH host key unknown",
        "Verify the fingerprint out of band, then pin it in "
        "source.ssh.host_key_fingerprint or add it to source.ssh.known_hosts.",
    ),
    Code(
        "SXM-SSH-003",
        "SSH host key changed",
        "The server's key differs from the pinned one: find out why before you update the pin.",
    ),
    Code(
        "SXM-SSH-004", "SSH authentication failed", "Check source.ssh.user and its key or password."
    ),
    Code(
        "SXM-SSH-005",
        "admin command failed",
        "Run the command shown by hand on the Scalix host; "
        "fix source.ssh.bin_dir, sudo or the command template.",
    ),
    Code(
        "SXM-SSH-006",
        "admin command output not understood",
        "The line is shown; override the command template or report the format.",
    ),
    Code(
        "SXM-SSH-007",
        "SSH connection lost during admin commands",
        "Reconnected and the unfinished commands rerun automatically, up to "
        "source.ssh.reconnect_attempts times; if it persists, check the network path and "
        "sshd's logs (MaxStartups, ClientAliveInterval) on the Scalix host.",
    ),
    Code(
        "SXM-SSH-008",
        "admin command timed out",
        "No answer within source.ssh.command_timeout_s: raise it for a large site, or run the "
        "command shown by hand on the Scalix host to see whether it hangs.",
    ),
    # source: IMAP
    Code(
        "SXM-IMAP-001",
        "source IMAP unreachable",
        "Nothing answered or the connection was refused: check source.imap.host and "
        "source.imap.port, and that a firewall lets this host through.",
    ),
    Code(
        "SXM-IMAP-002",
        "mboxadmin login refused",
        "Check the admin password and that the admin "
        "holds mboxadmin: /opt/scalix/bin/ommodu -o ADMIN -c +mboxadmin (as root).",
    ),
    Code(
        "SXM-IMAP-003",
        "source TLS verification failed",
        "Give source.imap.ca_file, or set verify_certificate: false knowingly.",
    ),
    Code(
        "SXM-IMAP-004",
        "message could not be fetched",
        "Recorded per message; open the folder in "
        "a mail client to check the item, then rerun the user.",
    ),
    Code("SXM-IMAP-005", "folder could not be opened", "Check the folder on the Scalix server."),
    Code(
        "SXM-IMAP-006",
        "message over the size limit",
        "Recorded as skipped; raise options.messages.max_size_bytes or move it by hand.",
    ),
    Code(
        "SXM-IMAP-007",
        "source IMAP connection lost",
        "The server dropped a working connection; it is retried (options.retries). If it "
        "repeats at the same folder/uid, look at that item and the Scalix IMAP log.",
    ),
    Code(
        "SXM-IMAP-008",
        "source IMAP stopped answering",
        "A working connection went quiet for source.imap.timeout_s; it is retried. Raise "
        "source.imap.timeout_s for a slow server or very large messages, or check its load.",
    ),
    Code(
        "SXM-IMAP-009",
        "source TLS handshake failed",
        "Check source.imap.tls against source.imap.port: implicit on 993, starttls or none on 143.",
    ),
    # destination
    Code(
        "SXM-DST-001",
        "destination unreachable",
        "Nothing answered or the connection was refused: check destination.host and "
        "destination.port, and that a firewall lets this host through.",
    ),
    Code(
        "SXM-DST-002",
        "destination login refused",
        "Check destination.password (destination.token_command or token_file for xoauth2) "
        "and destination.login_template for this user.",
    ),
    Code("SXM-DST-003", "destination over quota", "Raise the user's quota, then rerun the user."),
    Code(
        "SXM-DST-004",
        "message rejected by destination",
        "Recorded per message (size, content); see failures.csv.",
    ),
    Code(
        "SXM-DST-005",
        "destination throttled",
        "Retried with backoff; lower concurrency if it persists.",
    ),
    Code(
        "SXM-DST-006",
        "daily byte budget reached",
        "Nothing is wrong: the user resumes in the next run.",
    ),
    Code("SXM-DST-007", "folder cannot be created", "Rename the folder or add a rename rule."),
    Code(
        "SXM-DST-008",
        "verification mismatch",
        "See the per-message differences in the report; rerun the user to repair.",
    ),
    Code(
        "SXM-DST-009",
        "destination connection lost",
        "The destination dropped a working connection; it is reconnected and retried, and an "
        "interrupted APPEND is reconciled (never doubled). If it repeats, check its logs.",
    ),
    Code(
        "SXM-DST-010",
        "destination stopped answering",
        "A working connection went quiet for destination.timeout_s; it is retried. Raise "
        "destination.timeout_s for a slow server, or lower options.concurrency.users.",
    ),
    Code(
        "SXM-DST-011",
        "destination TLS failed",
        "Check destination.tls against destination.port (implicit on 993, starttls on 143); "
        "for an untrusted certificate give destination.ca_file.",
    ),
    # preflight and restart-service
    Code(
        "SXM-PRE-001",
        "blocking preflight finding",
        "Fix the findings listed by scalix-migrate preflight (each has its remedy), then rerun.",
    ),
    Code(
        "SXM-SVC-001",
        "Scalix services did not come back",
        "Check the services named with omstat -a and the Scalix logs; start them by hand.",
    ),
    Code(
        "SXM-SVC-002",
        "lock-out or undo command failed",
        "Run the command shown by hand; then scalix-migrate unlock FILE to undo the rest.",
    ),
    Code(
        "SXM-SVC-003",
        "the restart command failed",
        "Run service.restart_command by hand on the Scalix host and read its output.",
    ),
    # users and state
    Code("SXM-USR-001", "user not found", "Check the name in options.users or the server names."),
    Code(
        "SXM-USR-003",
        "user taken by another worker",
        "Another run migrates this user now; it is left to that run. If that worker died on "
        "another host, its claim expires after 6 hours.",
    ),
    Code("SXM-USR-002", "user has no message store", "Not an error: migrated as an empty mailbox."),
    Code(
        "SXM-USR-004",
        "folder name contains / or \\ (seen by the user's transfer)",
        "Rename the folder named in the message (in Outlook or SWA), then rerun the user; "
        "or list PF-USR-005:<user> in preflight.accept to copy it as nested folders.",
    ),
    Code(
        "SXM-STG-001",
        "staging store damaged",
        "A staged file does not match its hash; rerun the user's extract.",
    ),
    Code(
        "SXM-RUN-001",
        "unexpected internal error",
        "Rerun the user; report it with the log if it repeats.",
    ),
    # groupware: calendars and address books (destination.calendar / destination.contacts)
    Code(
        "SXM-GW-001",
        "calendar or vCard data broken",
        "Recorded per item (folder and message hash); open the item in Scalix and fix or "
        "re-save it, then rerun the user. The message itself is still migrated.",
    ),
    Code(
        "SXM-GW-002",
        "item has only Scalix's properties",
        "Not an error: the item has no iCalendar/vCard part and is migrated as a message only.",
    ),
    Code(
        "SXM-GW-003",
        "groupware item without calendar or vCard",
        "Not an error: migrated as a message only.",
    ),
    Code(
        "SXM-GW-004",
        "resource rejected by the DAV server",
        "Recorded per item with the server's status; check its size and content limits.",
    ),
    Code(
        "SXM-GW-005",
        "calendar or address book cannot be created",
        "Check the DAV URL/preset and that the user may create collections there.",
    ),
    Code(
        "SXM-GW-006",
        "DAV login refused",
        "Check destination.calendar/contacts credentials and the login template.",
    ),
    Code(
        "SXM-GW-007",
        "DAV server unreachable or busy",
        "Retried; check the DAV URL, TLS and the server's health if it persists.",
    ),
    Code(
        "SXM-GW-008",
        "groupware verification mismatch",
        "A resource read back differs from what was sent; see failures.csv, rerun the user.",
    ),
]

#: The codes an error (:class:`MigrationError`) may carry.
ERROR_CODES: dict[str, Code] = {c.code: c for c in _CODES}
#: Every code this tool raises or reports: errors (SXM-*) and preflight findings (PF-*).
CATALOGUE: dict[str, Code] = {**ERROR_CODES, **PREFLIGHT_CODES}


class MigrationError(Exception):
    """Base of every error this tool raises on purpose."""

    default_code = "SXM-RUN-001"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        user: str | None = None,
        folder: str | None = None,
        uid: int | None = None,
        remedy: str | None = None,
    ) -> None:
        self.code = code or self.default_code
        if self.code not in ERROR_CODES:
            # Loudly, where it is made: a typo must not invent a code nobody can look up.
            raise ValueError(f"unknown error code {self.code!r}: not in errors.ERROR_CODES")
        self.message = message
        self.user = user
        self.folder = folder
        self.uid = uid
        self.remedy = remedy or CATALOGUE[self.code].remedy
        super().__init__(self.describe())

    def describe(self) -> str:
        where = ", ".join(
            f"{k}={v}"
            for k, v in (("user", self.user), ("folder", self.folder), ("uid", self.uid))
            if v is not None
        )
        head = f"[{self.code}] {self.message}"
        if where:
            head += f" ({where})"
        return f"{head}. Fix: {self.remedy}"

    def __reduce__(self) -> tuple[object, ...]:
        # Prefect pickles task results and exceptions; keep the keyword-only fields.
        return (
            _rebuild,
            (type(self), self.message, self.code, self.user, self.folder, self.uid, self.remedy),
        )


def _rebuild(
    cls: type[MigrationError],
    message: str,
    code: str,
    user: str | None,
    folder: str | None,
    uid: int | None,
    remedy: str | None,
) -> MigrationError:
    return cls(message, code=code, user=user, folder=folder, uid=uid, remedy=remedy)


class ConfigError(MigrationError):
    """The tenant config is wrong. ``problems`` holds one line per finding."""

    default_code = "SXM-CFG-001"

    def __init__(
        self,
        message: str,
        *,
        problems: list[str] | None = None,
        code: str | None = None,
        remedy: str | None = None,
        **kw: object,
    ) -> None:
        self.problems = problems or [message]
        super().__init__(message, code=code, remedy=remedy)

    def describe(self) -> str:
        return "\n".join(self.problems)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_config, (self.message, self.problems, self.code))


def _rebuild_config(message: str, problems: list[str], code: str) -> ConfigError:
    return ConfigError(message, problems=problems, code=code)


class PreflightError(MigrationError):
    """A blocking preflight finding: nothing may move until it is fixed."""


class TransientError(MigrationError):
    """Network, timeout or throttling: worth retrying as it is."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)  # type: ignore[arg-type]


class ItemError(MigrationError):
    """One message could not be read or written; the rest of the user goes on."""


class UserError(MigrationError):
    """This user cannot be migrated now; the other users go on."""


class FatalError(MigrationError):
    """The tenant cannot go on (e.g. the source is unreachable for everyone)."""


def is_retryable(exc: BaseException) -> bool:
    """True for errors a retry may cure (used by the tasks' retry_condition_fn)."""
    return isinstance(exc, TransientError | TimeoutError | ConnectionError)
