"""OAuth2 access tokens for XOAUTH2 logins (Gmail, Microsoft 365).

A token comes from ``destination.token_command`` or ``destination.token_file``:

* the command is split with :func:`shlex.split` *first* and each argument then filled with the
  user's placeholders (``{email} {local_part} {domain} {auth_id} {display_name} {tenant}``), so a
  value never becomes shell syntax or several arguments; it runs without a shell, with a
  timeout, and its standard output (stripped) is the token;
* the file path is filled the same way and the file read (so an outside process can keep it
  fresh, as imapsync's ``--oauthaccesstoken`` does).

Tokens last about an hour and migrations longer: :meth:`TokenSource.token` with
``refresh=True`` runs the command (or reads the file) again; the IMAP sink asks for that when it
reconnects or when the server refuses the token. A token never appears in a log, message or
repr.
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
from pathlib import Path

from scalix_migrate.errors import UserError

COMMAND_TIMEOUT_S = 60.0


class TokenSource:
    """The access token of one destination user."""

    def __init__(
        self,
        *,
        command: str | None,
        file: str | None,
        placeholders: dict[str, str],
        user: str | None = None,
        timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        if not (command or file):
            raise ValueError("a token command or a token file is needed")
        self._command = command
        self._file = file
        self._values = placeholders
        self._user = user
        self._timeout_s = timeout_s
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"TokenSource(user={self._user!r}, token=***)"

    def argv(self) -> list[str]:
        """The token command's arguments, placeholders filled (no shell involved)."""
        assert self._command is not None
        return [self._fill(arg) for arg in shlex.split(self._command)]

    def _fill(self, text: str) -> str:
        # Only the known placeholders are replaced: other braces (JSON, f-strings) stay as is.
        return (
            re.sub(
                r"\{(" + "|".join(map(re.escape, self._values)) + r")\}",
                lambda m: self._values[m.group(1)],
                text,
            )
            if self._values
            else text
        )

    def token(self, *, refresh: bool = False) -> str:
        if self._token is None or refresh:
            self._token = self._fetch()
        return self._token

    def _fetch(self) -> str:
        if self._command:
            argv = self.argv()
            try:
                done = subprocess.run(
                    argv, capture_output=True, timeout=self._timeout_s, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise UserError(
                    f"token command {argv[0]!r} could not run ({type(exc).__name__})",
                    code="SXM-DST-002",
                    user=self._user,
                ) from None
            if done.returncode != 0:
                # stderr may hold secrets (client secrets, tokens): only its length is told.
                raise UserError(
                    f"token command {argv[0]!r} exited with {done.returncode} "
                    f"({len(done.stderr)} bytes on stderr)",
                    code="SXM-DST-002",
                    user=self._user,
                )
            token = done.stdout.decode("utf-8", "replace").strip()
        else:
            assert self._file is not None
            path = Path(self._fill(self._file)).expanduser()
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise UserError(
                    f"token file {path} cannot be read ({exc.strerror})",
                    code="SXM-DST-002",
                    user=self._user,
                ) from None
        if not token:
            raise UserError(
                "the token source gave an empty token", code="SXM-DST-002", user=self._user
            )
        return token


def xoauth2_string(user: str, token: str) -> bytes:
    """The SASL XOAUTH2 initial response (before base64), as Google and Microsoft define it."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def xoauth2_b64(user: str, token: str) -> str:
    return base64.b64encode(xoauth2_string(user, token)).decode("ascii")
