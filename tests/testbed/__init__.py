"""The real-server test bed: Dovecot playing Scalix's IMAP server, a Dovecot destination and
OpenSSH's sshd serving the Scalix admin-command emulators, started on 127.0.0.1 free ports."""

from tests.testbed.bed import (
    MAILNODES,
    TEST_USER,
    ScalixTestbed,
    baseline_directory,
    running_testbed,
    scalix_default_folders,
)
from tests.testbed.processes import INSTALL_HINT, TestbedError

__all__ = [
    "INSTALL_HINT",
    "MAILNODES",
    "TEST_USER",
    "ScalixTestbed",
    "TestbedError",
    "baseline_directory",
    "running_testbed",
    "scalix_default_folders",
]
