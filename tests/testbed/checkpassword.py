"""Dovecot ``checkpassword`` passdb that makes Dovecot answer LOGIN the way Scalix does.

Run by Dovecot's auth process as ``checkpassword.py <reply-program>`` with ``user\\0password\\0``
on fd 3 (the qmail checkpassword protocol). The directory JSON named by ``SXM_SANDBOX_DIRECTORY``
(set in the generated wrapper script, beside ``SXM_MAIL_ROOT``, ``SXM_MAIL_UID`` and
``SXM_MAIL_GID``) decides, through
:meth:`scalix_migrate.sandbox.directory.Directory.authenticate`:

* ``mboxadmin:<admin>:<user>`` with the admin's password, when the admin holds ``mboxadmin``,
  and a user's own login, open the *target* user's mailbox: ``USER`` is switched to the
  target's filesystem-safe :func:`mailbox_key` and the reply program is exec'd;
* anything else also "succeeds" at the checkpassword level but carries the passdb extra fields
  ``nologin`` + ``reason=LOGIN failure, user name or password rejected``, which is how Dovecot
  lets a passdb choose the text of the tagged ``NO`` (a plain exit 1 would always say
  "Authentication failed."). Dovecot 2.3 puts its own response code in front
  (``NO [CONTACTADMIN] LOGIN failure, user name or password rejected``); real Scalix sends no
  code. The text after the code is Scalix's verbatim, and a client must treat any tagged NO
  to LOGIN as an authentication failure.

Kept free of the test packages' imports: it starts once per LOGIN.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scalix_migrate.sandbox.directory import Directory, DirectoryUser

# The directory module is loaded from its file: importing it through the package would run
# scalix_migrate/sandbox/__init__.py (the embedded sandbox, paramiko, pymap: ~0.9 s) per LOGIN.
_DIRECTORY_MODULE = Path(__file__).resolve().parents[2] / "scalix_migrate/sandbox/directory.py"


def _directory_class() -> type[Directory]:
    spec = importlib.util.spec_from_file_location("sxm_directory", _DIRECTORY_MODULE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_DIRECTORY_MODULE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    cls: type[Directory] = module.Directory
    return cls


SCALIX_LOGIN_FAILURE = "LOGIN failure, user name or password rejected"
FAILURE_REASON = SCALIX_LOGIN_FAILURE


def mailbox_key(user: DirectoryUser) -> str:
    """The Dovecot user name (and maildir directory) of a directory user: its auth_id, made
    filesystem-safe (display names have spaces and may have quotes or slashes)."""
    return re.sub(r"[^a-z0-9._@-]", "_", user.auth_id.lower())


def _read_credentials() -> tuple[str, str]:
    with os.fdopen(3, "rb") as fd3:
        data = fd3.read(4096)
    parts = data.split(b"\0")
    if len(parts) < 2:
        return "", ""
    return parts[0].decode("utf-8", "replace"), parts[1].decode("utf-8", "replace")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: checkpassword.py <reply-program>", file=sys.stderr)
        return 2
    login, password = _read_credentials()
    directory_path = os.environ.get("SXM_SANDBOX_DIRECTORY", "")
    try:
        directory = _directory_class().load(Path(directory_path))
    except (OSError, ValueError) as exc:
        print(f"cannot read the directory {directory_path}: {exc}", file=sys.stderr)
        return 111  # Dovecot: temporary failure
    user = directory.authenticate(login, password) if login and password else None
    # checkpassword-reply copies the environment variables named in EXTRA, by their exact
    # (lower-case) names, into the passdb reply.
    if user is not None:
        key = mailbox_key(user)
        os.environ["USER"] = key
        os.environ["HOME"] = f"{os.environ.get('SXM_MAIL_ROOT', '/nonexistent')}/{key}"
        os.environ["userdb_uid"] = os.environ.get("SXM_MAIL_UID", str(os.getuid()))  # noqa: SIM112
        os.environ["userdb_gid"] = os.environ.get("SXM_MAIL_GID", str(os.getgid()))  # noqa: SIM112
        os.environ["EXTRA"] = "userdb_uid userdb_gid"
    else:
        os.environ["nologin"] = "y"  # noqa: SIM112
        os.environ["reason"] = FAILURE_REASON  # noqa: SIM112
        os.environ["EXTRA"] = "nologin reason"
    os.execv(argv[1], [argv[1]])  # noqa: S606 (the checkpassword protocol)
    return 111  # not reached: execv replaces the process


if __name__ == "__main__":
    sys.exit(main(sys.argv))
