"""OpenSSH's sshd serving the Scalix admin-command emulators on a loopback port.

Keys are generated per session with ``ssh-keygen``; the client key is the only way in
(``UsePAM no``, no passwords). ``bin_dir`` holds wrapper scripts named like Scalix's commands
that run :mod:`scalix_migrate.sandbox.admin_commands` with the test interpreter; ``SetEnv`` puts
``bin_dir`` first on ``PATH`` and names the directory JSON in ``SXM_SANDBOX_DIRECTORY``.

``configure_sshd(..., fast_emulators=True)`` (benchmark only, off by default) lets the
ForceCommand run a whole batch line in one Python process instead of ``/bin/sh -c``, when the
sandbox's sh-subset interpreter provably does the same; see :mod:`tests.testbed.emulator_entry`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.processes import (
    free_port,
    require_binary,
    run_checked,
    start_daemon,
    stop_process_group,
    wait_for_port,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_COMMANDS = (
    "omshowu",
    "ommodu",
    "omstat",
    "omoff",
    "omon",
    "omlimit",
    "sxdu",
    "omshowmn",
    "service",
)

# Run with "python -S": the emulators need only the standard library (and not the sandbox
# package's __init__, which would import paramiko and pymap: ~1 s per command).
ENTRY_SCRIPT = Path(__file__).resolve().with_name("emulator_entry.py")

# sudo stand-in: drops sudo's own options so "sudo -n <cmd>" works the same for any caller.
_SUDO = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-C) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: sudo [-n] command [args...]" >&2; exit 1; }
exec "$@"
"""


def fingerprint_of(public_key_line: str) -> str:
    """``SHA256:<base64 without padding>`` of an OpenSSH public key, as ``ssh-keygen -lf``."""
    blob = base64.b64decode(public_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def write_admin_wrappers(bin_dir: Path, directory_path: Path) -> None:
    """One executable per emulated admin command, plus the ``sudo`` pass-through."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = shlex.quote(sys.executable)
    for cmd in ADMIN_COMMANDS:
        script = bin_dir / cmd
        script.write_text(
            "#!/bin/sh\n"
            f'SXM_SANDBOX_DIRECTORY="${{SXM_SANDBOX_DIRECTORY:-{directory_path}}}"\n'
            f"PYTHONPATH={shlex.quote(str(REPO_ROOT))}\n"
            "export SXM_SANDBOX_DIRECTORY PYTHONPATH\n"
            # admin_commands.main() through the entry script, not "-m" (runpy warns on stderr
            # when the package __init__ has already imported the module; clients parse stderr).
            f'exec {python} -S {shlex.quote(str(ENTRY_SCRIPT))} command {cmd} "$@"\n'
        )
        script.chmod(0o755)
    sudo = bin_dir / "sudo"
    sudo.write_text(_SUDO)
    sudo.chmod(0o755)


@dataclass
class SshdServer:
    root: Path
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key_fingerprint: str
    config_file: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 10.0) -> None:
        sshd = require_binary("sshd", "/usr/sbin/sshd")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self.process = start_daemon(
            [sshd, "-D", "-e", "-f", str(self.config_file)], log_file=self.log_file
        )
        wait_for_port(self.port, timeout_s=timeout_s, log_file=self.log_file, process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None


def configure_sshd(
    root: Path, *, bin_dir: Path, directory_path: Path, fast_emulators: bool = False
) -> SshdServer:
    """Generate keys, ``authorized_keys``, ``known_hosts`` and ``sshd_config`` under ``root``.

    ``fast_emulators`` (benchmark only) makes the ForceCommand hand each command line to
    :mod:`tests.testbed.emulator_entry`, which runs a line the sandbox's sh-subset interpreter
    emulates exactly in one process and gives anything else to ``/bin/sh -c``. Off, every line
    goes straight to ``/bin/sh -c`` (one Python process per emulated command)."""
    keygen = require_binary("ssh-keygen", "/usr/bin/ssh-keygen")
    require_binary("sshd", "/usr/sbin/sshd")
    root.mkdir(parents=True, exist_ok=True)
    host_key, client_key = root / "ssh_host_ed25519_key", root / "client_ed25519"
    for key in (host_key, client_key):
        run_checked([keygen, "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)])
    host_pub = Path(f"{host_key}.pub").read_text().strip()
    authorized = root / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}\n")
    user = pwd.getpwuid(os.geteuid()).pw_name
    path = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # The login shell's rc files (root's ~/.bashrc here) may put other directories in front
    # of SetEnv's PATH: a forced command restores bin_dir first, then runs the client's
    # command line with /bin/sh, as a Scalix host's shell would.
    force = root / "force-command.sh"
    run_line = 'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
    if fast_emulators:
        # Benchmark only: one process per batch line instead of one per command (the entry
        # falls back to the same "/bin/sh -c" for anything it does not emulate exactly).
        wrappers = " ".join(shlex.quote(c) for c in ADMIN_COMMANDS)
        run_line = (
            f"PYTHONPATH={shlex.quote(str(REPO_ROOT))}\n"
            "export PYTHONPATH\n"
            f"exec {shlex.quote(sys.executable)} -S {shlex.quote(str(ENTRY_SCRIPT))} "
            f"line {shlex.quote(str(bin_dir))} {wrappers}\n"
        )
    force.write_text(
        "#!/bin/sh\n"
        f"PATH={shlex.quote(path)}\n"
        f"SXM_SANDBOX_DIRECTORY={shlex.quote(str(directory_path))}\n"
        "export PATH SXM_SANDBOX_DIRECTORY\n"
        'if [ -z "${SSH_ORIGINAL_COMMAND:-}" ]; then exec /bin/sh; fi\n' + run_line
    )
    force.chmod(0o755)
    config_file = root / "sshd_config"
    config_file.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root}/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {authorized}
StrictModes no
PermitRootLogin prohibit-password
AllowUsers {user}
PrintMotd no
X11Forwarding no
AllowTcpForwarding no
LogLevel INFO
SetEnv PATH={path} SXM_SANDBOX_DIRECTORY={directory_path}
ForceCommand {force}
""")
    return SshdServer(
        root=root,
        port=port,
        user=user,
        client_key=client_key,
        known_hosts=known_hosts,
        host_key_fingerprint=fingerprint_of(host_pub),
        config_file=config_file,
        log_file=root / "sshd.log",
    )
