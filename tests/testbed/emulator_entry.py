"""What the sshd test bed runs: one emulated admin command, or (opt-in) a whole batch line.

Run as ``python -S emulator_entry.py <mode> …`` by the scripts :mod:`tests.testbed.sshd` writes:

``command <name> [args…]``
    one admin command (the ``bin_dir`` wrappers): :func:`admin_commands.main`.
``line``
    the ForceCommand of a test bed started with ``fast_emulators=True``. When
    :func:`scalix_migrate.sandbox.shell.same_as_sh` accepts ``$SSH_ORIGINAL_COMMAND``, the
    whole line runs in this one process through the sandbox's sh-subset interpreter; otherwise
    this process becomes ``/bin/sh -c "$SSH_ORIGINAL_COMMAND"``, exactly the default path.

Why the fast path exists: with the real shell every emulated command is its own Python process
(start-up plus a parse of the whole directory JSON), so a 5,000-user discovery (15,001 commands)
measures the stand-in, not the client. The fast path is for the discovery benchmark only
(``bench/discovery_bench.py``); the default test bed keeps ``/bin/sh`` so that quoting and the
shell-injection tests (a user named ``o'brien; touch /tmp/pwned``) go through a real shell.

Kept free of site-packages and of ``scalix_migrate/sandbox/__init__.py`` (which imports the
embedded sandbox: paramiko and pymap, ~1 s): both modules need only the standard library.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def _sandbox_package_without_init() -> None:
    """Register ``scalix_migrate.sandbox`` as a bare package so that importing its submodules
    does not run its ``__init__`` (the embedded sandbox and its heavy imports)."""
    if "scalix_migrate.sandbox" in sys.modules:
        return
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    import scalix_migrate  # noqa: F401 (the parent package, which imports nothing heavy)

    pkg = types.ModuleType("scalix_migrate.sandbox")
    pkg.__path__ = [str(_REPO / "scalix_migrate" / "sandbox")]
    sys.modules["scalix_migrate.sandbox"] = pkg


def _line(bin_dir: str, wrappers: list[str]) -> int:
    from scalix_migrate.sandbox.admin_commands import DIRECTORY_ENV
    from scalix_migrate.sandbox.shell import (
        ShellSyntaxError,
        execute_parsed,
        parse,
        parsed_same_as_sh,
    )

    line = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    directory = os.environ.get(DIRECTORY_ENV, "")
    try:
        commands = parse(line) if line and directory else None
    except ShellSyntaxError:
        commands = None
    if commands is None or not parsed_same_as_sh(commands, bin_dir=bin_dir, wrappers=wrappers):
        sys.stdout.flush()
        # The same real shell the default ForceCommand uses.
        os.execv("/bin/sh", ["/bin/sh", "-c", line] if line else ["/bin/sh"])  # noqa: S606
    result = execute_parsed(commands, Path(directory))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exit_status


def main(argv: list[str]) -> int:
    _sandbox_package_without_init()
    if len(argv) >= 2 and argv[0] == "command":
        from scalix_migrate.sandbox.admin_commands import main as run_command

        return run_command(argv[1:])
    if len(argv) >= 2 and argv[0] == "line":
        return _line(argv[1], argv[2:])
    sys.stderr.write(
        "usage: emulator_entry.py command <name> [args...] | line <bin_dir> <name>...\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
