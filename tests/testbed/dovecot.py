"""Two Dovecot instances: one playing Scalix's IMAP server, one as the migration destination.

Each runs in the foreground (``dovecot -F``) in its own process group with its own ``base_dir``,
state and log file under the test bed's work directory, listening on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.certs import TestCertificates
from tests.testbed.processes import (
    free_port,
    require_binary,
    start_daemon,
    stop_process_group,
    wait_for_port,
)

# Scalix's folder names with the RFC 6154 role Dovecot can advertise for them. Dovecot cannot
# emit Scalix's own "\X-SpecialFolder=SentItems" attributes, so the extractor's RFC 6154 mapping
# is what the test bed exercises.
SOURCE_SPECIAL_USE = {
    "Sent Items": "\\Sent",
    "Deleted Items": "\\Trash",
    "Drafts": "\\Drafts",
    "Junk E-mail": "\\Junk",
}
DEST_SPECIAL_USE = {
    "Sent": "\\Sent",
    "Trash": "\\Trash",
    "Drafts": "\\Drafts",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


@dataclass(frozen=True)
class MailIdentity:
    """Which system accounts Dovecot's processes run as."""

    login_user: str
    internal_user: str
    auth_user: str
    mail_uid: int
    mail_gid: int

    @classmethod
    def for_current_process(cls) -> MailIdentity:
        if os.geteuid() == 0:
            # Dovecot refuses mail access as root; "nobody" owns the test maildirs.
            nobody = pwd.getpwnam("nobody")
            # The auth process runs the checkpassword script with the test interpreter, which
            # may live under /root (pyenv): it keeps root there.
            return cls("dovenull", "dovecot", "root", nobody.pw_uid, nobody.pw_gid)
        me = pwd.getpwuid(os.geteuid()).pw_name
        return cls(me, me, me, os.geteuid(), os.getegid())


@dataclass
class DovecotServer:
    name: str
    config_file: Path
    log_file: Path
    port: int
    ssl_port: int | None
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 10.0) -> None:
        dovecot = require_binary("dovecot", "/usr/sbin/dovecot")
        self.process = start_daemon(
            [dovecot, "-F", "-c", str(self.config_file)], log_file=self.log_file
        )
        wait_for_port(self.port, timeout_s=timeout_s, log_file=self.log_file, process=self.process)
        if self.ssl_port is not None:
            wait_for_port(
                self.ssl_port, timeout_s=timeout_s, log_file=self.log_file, process=self.process
            )

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None


def _common(root: Path, instance: str, ident: MailIdentity, log_file: Path) -> str:
    return f"""\
base_dir = {root}/run
state_dir = {root}/state
instance_name = {instance}
protocols = imap
listen = 127.0.0.1
log_path = {log_file}
info_log_path = {log_file}
default_login_user = {ident.login_user}
default_internal_user = {ident.internal_user}
mail_uid = {ident.mail_uid}
mail_gid = {ident.mail_gid}
first_valid_uid = 1
first_valid_gid = 1
disable_plaintext_auth = no
auth_mechanisms = plain login
# Scalix login names hold ':' and spaces ("mboxadmin:Scalix Admin:Kim Lee").
auth_username_chars =
auth_username_format = %u
# Failed logins are not slowed down: negative tests would trip client timeouts.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:{root}/mail/%u:LAYOUT=fs
service auth {{
  user = {ident.auth_user}
}}
"""


def _mailboxes(special: dict[str, str], *, auto: str) -> str:
    lines = []
    for name, role in special.items():
        lines.append(f'  mailbox "{name}" {{\n    special_use = {role}\n    auto = {auto}\n  }}')
    return "\n".join(lines)


def _prepare(root: Path, ident: MailIdentity) -> None:
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # noqa: S103 (Dovecot's unprivileged processes traverse it)
    os.chown(root / "mail", ident.mail_uid, ident.mail_gid)


def scalix_source(root: Path, certs: TestCertificates, checkpassword: Path) -> DovecotServer:
    """Dovecot as Scalix: separator "/", Scalix folder names, the mboxadmin LOGIN via a
    checkpassword passdb, a plain listener and an implicit-TLS listener."""
    ident = MailIdentity.for_current_process()
    _prepare(root, ident)
    port, ssl_port = free_port(), free_port()
    log_file = root / "dovecot.log"
    conf = (
        _common(root, f"sxm-scalix-{port}", ident, log_file)
        + f"""\
ssl = yes
ssl_cert = <{certs.cert_file}
ssl_key = <{certs.key_file}
ssl_min_protocol = TLSv1.2
passdb {{
  driver = checkpassword
  args = {checkpassword}
}}
userdb {{
  driver = static
  args = allow_all_users=yes
}}
namespace inbox {{
  inbox = yes
  prefix =
  separator = /
{_mailboxes(SOURCE_SPECIAL_USE, auto="no")}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
    ssl = yes
  }}
}}
"""
    )
    config_file = root / "dovecot.conf"
    config_file.write_text(conf)
    return DovecotServer("scalix", config_file, log_file, port, ssl_port)


#: The destination login whose quota is OVERQUOTA_LIMIT (everyone else is unlimited).
OVERQUOTA_LOGIN = "overquota@dest.test"
OVERQUOTA_LIMIT = "64K"
_QUOTA_EXPR = f"%{{if;%u;eq;{OVERQUOTA_LOGIN};{OVERQUOTA_LIMIT};0}}"  # Dovecot's conditional
#: The destination login that refuses any message over TOOBIG_LIMIT with NO [LIMIT].
TOOBIG_LOGIN = "toobig@dest.test"
TOOBIG_LIMIT = "8k"
_MAX_SIZE_EXPR = f"%{{if;%u;eq;{TOOBIG_LOGIN};{TOOBIG_LIMIT};0}}"
_USERDB_QUOTA = f"quota_rule=*:storage={_QUOTA_EXPR} quota_max_mail_size={_MAX_SIZE_EXPR}"


def destination(root: Path, password: str) -> DovecotServer:
    """Dovecot as the destination: any login name with one password, separator "/",
    auto-created SPECIAL-USE folders."""
    ident = MailIdentity.for_current_process()
    _prepare(root, ident)
    port = free_port()
    log_file = root / "dovecot.log"
    conf = (
        _common(root, f"sxm-dest-{port}", ident, log_file)
        + f"""\
ssl = no
passdb {{
  driver = static
  args = password={password}
}}
# One login has a tiny quota (over-quota tests); storage=0 means unlimited for everyone else.
userdb {{
  driver = static
  args = allow_all_users=yes {_USERDB_QUOTA}
}}
mail_plugins = $mail_plugins quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  quota = maildir:User quota
}}
namespace inbox {{
  inbox = yes
  prefix =
  separator = /
{_mailboxes(DEST_SPECIAL_USE, auto="subscribe")}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
    )
    config_file = root / "dovecot.conf"
    config_file.touch(mode=0o600)
    config_file.write_text(conf)  # holds dest_password: readable by its owner only
    return DovecotServer("destination", config_file, log_file, port, None)
