"""A throw-away CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.testbed.processes import require_binary, run_checked


@dataclass(frozen=True)
class TestCertificates:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certificates(directory: Path) -> TestCertificates:
    """Create ``ca.pem`` and a CA-signed ``server.pem``/``server.key`` (EC P-256: fast)."""
    openssl = require_binary("openssl", "/usr/bin/openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_file = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run_checked(
        [
            openssl,
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_file),
            "-days",
            "2",
            "-subj",
            "/CN=scalix-migrate test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )
    run_checked(
        [
            openssl,
            "req",
            "-new",
            *ec,
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=localhost",
        ]
    )
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    run_checked(
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_file),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "2",
            "-extfile",
            str(ext),
        ]
    )
    key.chmod(0o600)
    return TestCertificates(ca_file=ca_file, cert_file=cert, key_file=key)
