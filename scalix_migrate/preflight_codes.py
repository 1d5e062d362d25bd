"""The preflight catalogue: every finding code with its severity, title and remedy.

A :class:`Finding` is one result of a check: a code from :data:`PREFLIGHT_CODES`, its
severity (``blocking``: nothing may move; ``exclude-user``: this user is left out of the run;
``warning``), the user it concerns, a message and the remedy the operator can apply. The
checks live in :mod:`scalix_migrate.preflight` (source, admin, users),
:mod:`scalix_migrate.preflight_destination` and :mod:`scalix_migrate.preflight_groupware`;
they all build findings with :func:`finding`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Scalix's installer defaults (scalix.md §1.1).
SCALIX_CONNECTION_LIMIT = 500
SCALIX_CONNECT_RATE_LIMIT = 10.0
SCALIX_SIGNONS_PER_USER = 54
SOURCE_SESSIONS_PER_USER = 1  # extract reads one user over one IMAP session at a time


class Severity(StrEnum):
    blocking = "blocking"
    exclude_user = "exclude-user"
    warning = "warning"


@dataclass(frozen=True)
class PreflightCode:
    code: str
    severity: Severity
    title: str
    remedy: str


B, X, W = Severity.blocking, Severity.exclude_user, Severity.warning
_CODES = [
    PreflightCode("PF-SSH-001", B, "SSH unreachable", "Check source.ssh.host/port and sshd."),
    PreflightCode(
        "PF-SSH-002",
        B,
        "SSH host key unknown",
        "Verify the fingerprint shown, then pin it in source.ssh.host_key_fingerprint.",
    ),
    PreflightCode(
        "PF-SSH-003", B, "SSH host key changed", "Find out why the key changed; then re-pin it."
    ),
    PreflightCode(
        "PF-SSH-004", B, "SSH login refused", "Check source.ssh.user and its key or password."
    ),
    PreflightCode(
        "PF-SSH-005",
        B,
        "admin commands not runnable",
        "Run the command shown on the Scalix host; fix source.ssh.bin_dir, sudo or the template.",
    ),
    PreflightCode(
        "PF-SSH-006",
        W,
        "admin output line not understood",
        "Check the line; override the command template in source.ssh.commands if needed.",
    ),
    PreflightCode(
        "PF-SSH-007",
        X,
        "admin command failed for a user",
        "Run the command shown by hand; the user is left out until it works.",
    ),
    PreflightCode(
        "PF-ADM-001", B, "admin user not found", "Set source.admin_user to an existing Scalix user."
    ),
    PreflightCode(
        "PF-ADM-002",
        B,
        "admin is not a full administrator",
        "SAC → the admin user → Advanced tab → tick 'Is full administrator'; if SAC shows it "
        "ticked, accept the finding: preflight.accept: [PF-ADM-002].",
    ),
    PreflightCode(
        "PF-ADM-004",
        W,
        "full administrator not shown by omshowu; the rights were shown by use",
        "Check 'Is full administrator' in SAC; then accept it with preflight.accept: [PF-ADM-004].",
    ),
    PreflightCode(
        "PF-ADM-005",
        W,
        "mboxadmin not listed by omshowu, yet the mboxadmin login worked",
        "Nothing to do when the test mailbox opened; check the capability list if unexpected.",
    ),
    PreflightCode(
        "PF-ADM-003",
        B,
        "admin lacks mboxadmin",
        "As root on the Scalix host: /opt/scalix/bin/ommodu -o ADMIN -c +mboxadmin",
    ),
    PreflightCode(
        "PF-TST-001",
        B,
        "test user not found",
        "Set source.test_user to the primary address of a real user (not the admin).",
    ),
    PreflightCode(
        "PF-TST-002",
        B,
        "test user given by an alias",
        "Set source.test_user to the user's primary address (the first Internet Address).",
    ),
    PreflightCode(
        "PF-TST-003",
        B,
        "mboxadmin login refused",
        "Check source.admin_password (the admin's own Scalix password) and that "
        "source.admin_user holds mboxadmin: ommodu -o ADMIN -c +mboxadmin (as root).",
    ),
    PreflightCode(
        "PF-TST-004",
        B,
        "test mailbox not readable",
        "Open the test user's mailbox in a mail client as mboxadmin:<admin>:<user>.",
    ),
    PreflightCode(
        "PF-IMAP-001", B, "source IMAP unreachable", "Check source.imap.host/port and tls."
    ),
    PreflightCode(
        "PF-TLS-001",
        W,
        "source TLS disabled or unverified",
        "Use tls: implicit/starttls with verify_certificate: true where the network allows.",
    ),
    PreflightCode(
        "PF-TLS-002",
        B,
        "source TLS certificate not trusted",
        "Give source.imap.ca_file, or set verify_certificate: false knowingly.",
    ),
    PreflightCode(
        "PF-USR-001",
        X,
        "export identity is not the primary address (M0022)",
        "In SAC move the address shown to the top of the user's e-mail addresses.",
    ),
    PreflightCode(
        "PF-USR-002", X, "user has no e-mail address", "Give the user an address in SAC."
    ),
    PreflightCode(
        "PF-USR-003", W, "user has no message store", "Nothing to do: migrated as empty."
    ),
    PreflightCode(
        "PF-USR-004", W, "user's mail account is locked", "Nothing to do unless it is unexpected."
    ),
    PreflightCode(
        "PF-USR-005",
        X,
        "folder name contains / or \\",
        "Rename the folder named in the message (in Outlook or SWA), then rerun preflight.",
    ),
    PreflightCode(
        "PF-USR-006",
        X,
        "user's folders could not be listed",
        "Open the mailbox as mboxadmin:<admin>:<user> by hand to see why.",
    ),
    PreflightCode(
        "PF-SEL-001",
        W,
        "include pattern matched no user",
        "Fix options.users.include (names, addresses or fnmatch patterns).",
    ),
    PreflightCode(
        "PF-SEL-002", W, "no user selected", "Check source.server_names and options.users."
    ),
    PreflightCode(
        "PF-SES-001",
        W,
        "user connected now",
        "Ask the user to log off, or use service.restart with a lock-out before cutover.",
    ),
    PreflightCode(
        "PF-CON-001",
        B,
        "too many connections for Scalix",
        f"Keep options.concurrency.connections_per_server ≤ {SCALIX_CONNECTION_LIMIT}.",
    ),
    PreflightCode(
        "PF-CON-002",
        B,
        "connect rate above Scalix's limit",
        f"Keep options.concurrency.connects_per_second ≤ {SCALIX_CONNECT_RATE_LIMIT:g}.",
    ),
    PreflightCode(
        "PF-CON-003",
        B,
        "sign-ons per user above Scalix's limit",
        f"Keep the sessions per user ≤ {SCALIX_SIGNONS_PER_USER} (MAX_SIGNON_PER_USER).",
    ),
    PreflightCode(
        "PF-CON-004",
        W,
        "more users in parallel than connections",
        "Lower options.concurrency.users or raise connections_per_server.",
    ),
    PreflightCode(
        "PF-DST-001", B, "destination unreachable", "Check destination.host/port and tls."
    ),
    PreflightCode(
        "PF-DST-002",
        B,
        "destination login refused",
        "Check destination.password/token and login_template for the sample user.",
    ),
    PreflightCode(
        "PF-DST-003",
        B,
        "scratch folder cannot be created or removed",
        "Give the destination account the right to create and delete folders.",
    ),
    PreflightCode(
        "PF-DST-004",
        X,
        "destination quota below the Scalix mailbox size",
        "Raise the user's quota at the destination.",
    ),
    PreflightCode(
        "PF-DST-005",
        B,
        "destination path not writable or too full",
        "Create the directory with write access for the migrator, or free space.",
    ),
    PreflightCode(
        "PF-DST-006",
        W,
        "destination TLS disabled or unverified",
        "Use tls: implicit/starttls with verify_certificate: true.",
    ),
    PreflightCode(
        "PF-GW-001",
        B,
        "calendar/contacts server unreachable",
        "Check destination.calendar/contacts url, TLS and the server.",
    ),
    PreflightCode(
        "PF-GW-002",
        B,
        "calendar or address book cannot be created or removed",
        "Check the DAV url/preset and that the user may create and delete collections.",
    ),
    PreflightCode(
        "PF-GW-003",
        B,
        "calendar/contacts login refused",
        "Check destination.calendar/contacts password/token and login_template.",
    ),
    PreflightCode(
        "PF-GW-004",
        B,
        "groupware files directory not writable",
        "Create destination.calendar/contacts path with write access for the migrator.",
    ),
    PreflightCode(
        "PF-GW-005", W, "calendar/contacts server over plain http", "Use an https:// URL."
    ),
    PreflightCode(
        "PF-GW-006",
        W,
        "DAV server's resource size limit is small",
        "Raise the server's limit (max-resource-size); larger items are reported per item.",
    ),
    PreflightCode(
        "PF-STG-001",
        B,
        "staging directory not writable or too full",
        "Free space or point options.staging_dir at a larger disk.",
    ),
]
PREFLIGHT_CODES: dict[str, PreflightCode] = {c.code: c for c in _CODES}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    user: str | None
    message: str
    remedy: str
    accepted: bool = False  # by preflight.accept: kept and shown, but blocks/excludes nothing

    @property
    def counts(self) -> bool:
        """Whether the finding has its severity's effect (it is not accepted)."""
        return not self.accepted


def finding(
    code: str, message: str, *, user: str | None = None, remedy: str | None = None
) -> Finding:
    spec = PREFLIGHT_CODES[code]
    return Finding(code, spec.severity, user, message, remedy or spec.remedy)
