"""netfaults.classify: each exception the adapters see lands in the right kind."""

from __future__ import annotations

import errno
import imaplib
import socket
import ssl

import pytest

from scalix_migrate.netfaults import classify, destination_code, plain_text, source_code


@pytest.mark.parametrize(
    ("exc", "connecting", "kind"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True, "refused"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), False, "lost"),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), False, "lost"),
        (EOFError(), False, "lost"),
        (imaplib.IMAP4.abort("socket error: EOF"), False, "lost"),
        (TimeoutError("timed out"), False, "timeout"),
        (TimeoutError("timed out"), True, "unreachable"),
        (socket.gaierror(-2, "Name or service not known"), True, "unreachable"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), True, "unreachable"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), True, "tls"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), True, "tls-verify"),
    ],
)
def test_classify(exc: BaseException, connecting: bool, kind: str) -> None:
    fault = classify(exc, connecting=connecting)
    assert fault.kind == kind
    assert source_code(fault).startswith("SXM-IMAP-")
    assert destination_code(fault).startswith("SXM-DST-")


def test_plain_text_has_no_python_reprs() -> None:
    exc = imaplib.IMAP4.error([b"[CONTACTADMIN] LOGIN failure"])
    assert plain_text(exc) == "[CONTACTADMIN] LOGIN failure"
    assert plain_text(imaplib.IMAP4.error(b"NO no")) == "NO no"
    assert plain_text(EOFError()) == "EOFError"
