"""The command line as an operator meets it: a stopped Prefect server, pipes (issue 11)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scalix_migrate.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["run", "configs/examples/acme.yaml"],
        ["deploy", "configs/examples/acme.yaml"],
        ["demo", "--workdir", "{tmp}/demo"],
    ],
)
def test_a_stopped_prefect_server_is_one_line_with_the_two_ways_out(
    args: list[str], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/api"
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "home")}

    proc = _cli(*[a.format(tmp=tmp_path) for a in args], env=env, cwd=REPO)

    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert f"Prefect API {url} (PREFECT_API_URL) is unreachable" in lines[0]
    assert "prefect server start" in lines[0]
    assert "prefect config unset PREFECT_API_URL" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "demo").exists()  # nothing started before the check
