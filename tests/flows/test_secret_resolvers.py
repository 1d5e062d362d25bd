"""``prefect-secret:`` references resolve wherever the config is used, not only in a flow run.

Issue 12: the Prefect resolver was registered by importing ``tasks``, so ``scalix-migrate
preflight`` (which never imports it) could not read ``prefect-secret:`` passwords and reported
the test mailbox as unreadable (PF-TST-004). The command runs here in its own process, so no
earlier import of ``tasks`` by this test session can hide that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.sandbox.directory import DirectoryUser
from tests.testbed.bed import scalix_default_folders

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = Path(__file__).resolve().parents[2]


def _save_secret(name: str, value: str) -> None:
    from prefect.blocks.system import Secret

    Secret(value=value).save(name, overwrite=True)


def _api_env(tmp_path: Path) -> dict[str, str]:
    """This session's Prefect test server for a child process (the harness sets it in-process)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the prefect_server fixture sets the API URL"
    return {**os.environ, "PREFECT_API_URL": str(url)}


def test_preflight_command_reads_prefect_secret_passwords(testbed: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    mailnode = f"pfsecret-{tag}"
    address = f"pfs-{tag}@primary.test"
    testbed.update_directory(lambda d: d.mailnodes.append(mailnode))
    testbed.add_user(
        DirectoryUser(
            display_name=f"Pfs {tag}",
            mailnode=mailnode,
            auth_id=address,
            addresses=[address],
            password=uuid.uuid4().hex,
            folders=scalix_default_folders(),
        )
    )
    _save_secret(f"sxm-admin-{tag}", testbed.admin_password)
    _save_secret(f"sxm-dest-{tag}", testbed.dest_password)
    path, _ = testbed.make_config(
        tmp_path,
        destination={"type": "imap", "password": f"prefect-secret:sxm-dest-{tag}"},
        source={
            "server_names": [mailnode],
            "test_user": address,
            "admin_password": f"prefect-secret:sxm-admin-{tag}",
        },
    )

    proc = subprocess.run(
        [sys.executable, "-m", "scalix_migrate.cli", "preflight", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_api_env(tmp_path),
        cwd=REPO,
    )

    out = proc.stdout + proc.stderr
    assert "no resolver" not in out
    for code in ("PF-TST-003", "PF-TST-004", "PF-DST-002"):
        assert code not in out, out[-3000:]
    assert proc.returncode == 0, out[-3000:]


def test_a_missing_prefect_secret_block_names_the_reference(tmp_path: Path) -> None:
    from scalix_migrate.errors import ConfigError
    from scalix_migrate.secrets import SecretRef

    ref = SecretRef.parse(f"prefect-secret:sxm-missing-{uuid.uuid4().hex[:6]}")
    with pytest.raises(ConfigError) as err:
        ref.resolve()
    assert err.value.code == "SXM-CFG-002"
    assert ref.reference in str(err.value)
