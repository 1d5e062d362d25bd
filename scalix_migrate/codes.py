"""Codes as records, and the preflight findings' codes (with their severity).

:data:`scalix_migrate.errors.CATALOGUE` is the one list of every code: the error codes
(``SXM-*``, in :mod:`scalix_migrate.errors`) and the finding codes here (``PF-*``). They live
apart from :mod:`scalix_migrate.preflight`, which runs the checks, so that the catalogue holds
them without importing the checks. An error or a finding with a code not in the catalogue is
refused when it is made (``ValueError``): a typo cannot invent a code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Code:
    """A stable error or finding code and the operator's next step."""

    code: str
    title: str
    remedy: str


# Scalix's installer defaults (scalix.md §1.1).
SCALIX_CONNECTION_LIMIT = 500
SCALIX_CONNECT_RATE_LIMIT = 10.0
SCALIX_SIGNONS_PER_USER = 54


class Severity(StrEnum):
    blocking = "blocking"
    exclude_user = "exclude-user"
    warning = "warning"


@dataclass(frozen=True)
class PreflightCode(Code):
    """A finding's code: also the severity every finding with it has."""

    severity: Severity


def _pf(code: str, severity: Severity, title: str, remedy: str) -> PreflightCode:
    return PreflightCode(code, title, remedy, severity)


B, X, W = Severity.blocking, Severity.exclude_user, Severity.warning
_CODES = [
    _pf("PF-SSH-001", B, "SSH unreachable", "Check source.ssh.host/port and sshd."),
    _pf(
        "PF-SSH-002",
        B,
        "SSH host key unknown",
        "Verify the fingerprint shown, then pin it in source.ssh.host_key_fingerprint.",
    ),
    _pf("PF-SSH-003", B, "SSH host key changed", "Find out why the key changed; then re-pin it."),
    _pf("PF-SSH-004", B, "SSH login refused", "Check source.ssh.user and its key or password."),
    _pf(
        "PF-SSH-005",
        B,
        "admin commands not runnable",
        "Run the command shown on the Scalix host; fix source.ssh.bin_dir, sudo or the template.",
    ),
    _pf(
        "PF-SSH-006",
        W,
        "admin output line not understood",
        "Check the line; override the command template in source.ssh.commands if needed.",
    ),
    _pf(
        "PF-SSH-007",
        X,
        "admin command failed for a user",
        "Run the command shown by hand; the user is left out until it works.",
    ),
    _pf(
        "PF-ADM-001", B, "admin user not found", "Set source.admin_user to an existing Scalix user."
    ),
    _pf(
        "PF-ADM-002",
        B,
        "admin is not a full administrator",
        "SAC → the admin user → Advanced tab → tick 'Is full administrator'; if SAC shows it "
        "ticked, accept the finding: preflight.accept: [PF-ADM-002].",
    ),
    _pf(
        "PF-ADM-004",
        W,
        "full administrator not shown by omshowu; the rights were shown by use",
        "Check 'Is full administrator' in SAC; then accept it with preflight.accept: [PF-ADM-004].",
    ),
    _pf(
        "PF-ADM-005",
        W,
        "mboxadmin not listed by omshowu, yet the mboxadmin login worked",
        "Nothing to do when the test mailbox opened; check the capability list if unexpected.",
    ),
    _pf(
        "PF-ADM-003",
        B,
        "admin lacks mboxadmin",
        "As root on the Scalix host: /opt/scalix/bin/ommodu -o ADMIN -c +mboxadmin",
    ),
    _pf(
        "PF-TST-001",
        B,
        "test user not found",
        "Set source.test_user to the primary address of a real user (not the admin).",
    ),
    _pf(
        "PF-TST-002",
        B,
        "test user given by an alias",
        "Set source.test_user to the user's primary address (the first Internet Address).",
    ),
    _pf(
        "PF-TST-003",
        B,
        "mboxadmin login refused",
        "Check source.admin_password (the admin's own Scalix password) and that "
        "source.admin_user holds mboxadmin: ommodu -o ADMIN -c +mboxadmin (as root).",
    ),
    _pf(
        "PF-TST-004",
        B,
        "test mailbox not readable",
        "Open the test user's mailbox in a mail client as mboxadmin:<admin>:<user>.",
    ),
    _pf("PF-IMAP-001", B, "source IMAP unreachable", "Check source.imap.host/port and tls."),
    _pf(
        "PF-TLS-001",
        W,
        "source TLS disabled or unverified",
        "Use tls: implicit/starttls with verify_certificate: true where the network allows.",
    ),
    _pf(
        "PF-TLS-002",
        B,
        "source TLS certificate not trusted",
        "Give source.imap.ca_file, or set verify_certificate: false knowingly.",
    ),
    _pf(
        "PF-USR-001",
        X,
        "export identity is not the primary address (M0022)",
        "In SAC move the address shown to the top of the user's e-mail addresses.",
    ),
    _pf("PF-USR-002", X, "user has no e-mail address", "Give the user an address in SAC."),
    _pf("PF-USR-003", W, "user has no message store", "Nothing to do: migrated as empty."),
    _pf("PF-USR-004", W, "user's mail account is locked", "Nothing to do unless it is unexpected."),
    _pf(
        "PF-USR-005",
        X,
        "folder name contains / or \\",
        "Rename the folder named in the message (in Outlook or SWA), then rerun preflight.",
    ),
    _pf(
        "PF-USR-006",
        X,
        "user's folders could not be listed",
        "Open the mailbox as mboxadmin:<admin>:<user> by hand to see why.",
    ),
    _pf(
        "PF-SEL-001",
        W,
        "include pattern matched no user",
        "Fix options.users.include (names, addresses or fnmatch patterns).",
    ),
    _pf("PF-SEL-002", W, "no user selected", "Check source.server_names and options.users."),
    _pf(
        "PF-SES-001",
        W,
        "user connected now",
        "Ask the user to log off, or use service.restart with a lock-out before cutover.",
    ),
    _pf(
        "PF-CON-001",
        B,
        "too many connections for Scalix",
        f"Keep options.concurrency.connections_per_server ≤ {SCALIX_CONNECTION_LIMIT}.",
    ),
    _pf(
        "PF-CON-002",
        B,
        "connect rate above Scalix's limit",
        f"Keep options.concurrency.connects_per_second ≤ {SCALIX_CONNECT_RATE_LIMIT:g}.",
    ),
    _pf(
        "PF-CON-003",
        B,
        "sign-ons per user above Scalix's limit",
        f"Keep the sessions per user ≤ {SCALIX_SIGNONS_PER_USER} (MAX_SIGNON_PER_USER).",
    ),
    _pf(
        "PF-CON-004",
        W,
        "more users in parallel than connections",
        "Lower options.concurrency.users or raise connections_per_server.",
    ),
    _pf("PF-DST-001", B, "destination unreachable", "Check destination.host/port and tls."),
    _pf(
        "PF-DST-002",
        B,
        "destination login refused",
        "Check destination.password/token and login_template for the sample user.",
    ),
    _pf(
        "PF-DST-003",
        B,
        "scratch folder cannot be created or removed",
        "Give the destination account the right to create and delete folders.",
    ),
    _pf(
        "PF-DST-004",
        X,
        "destination quota below the Scalix mailbox size",
        "Raise the user's quota at the destination.",
    ),
    _pf(
        "PF-DST-005",
        B,
        "destination path not writable or too full",
        "Create the directory with write access for the migrator, or free space.",
    ),
    _pf(
        "PF-DST-006",
        W,
        "destination TLS disabled or unverified",
        "Use tls: implicit/starttls with verify_certificate: true.",
    ),
    _pf(
        "PF-GW-001",
        B,
        "calendar/contacts server unreachable",
        "Check destination.calendar/contacts url, TLS and the server.",
    ),
    _pf(
        "PF-GW-002",
        B,
        "calendar or address book cannot be created or removed",
        "Check the DAV url/preset and that the user may create and delete collections.",
    ),
    _pf(
        "PF-GW-003",
        B,
        "calendar/contacts login refused",
        "Check destination.calendar/contacts password/token and login_template.",
    ),
    _pf(
        "PF-GW-004",
        B,
        "groupware files directory not writable",
        "Create destination.calendar/contacts path with write access for the migrator.",
    ),
    _pf("PF-GW-005", W, "calendar/contacts server over plain http", "Use an https:// URL."),
    _pf(
        "PF-GW-006",
        W,
        "DAV server's resource size limit is small",
        "Raise the server's limit (max-resource-size); larger items are reported per item.",
    ),
    _pf(
        "PF-STG-001",
        B,
        "staging directory not writable or too full",
        "Free space or point options.staging_dir at a larger disk.",
    ),
]
#: Every preflight finding code; errors.CATALOGUE holds these and the error codes.
PREFLIGHT_CODES: dict[str, PreflightCode] = {c.code: c for c in _CODES}
