"""The command line as an operator meets it: a stopped Prefect server, pipes (issue 11)."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is


def _cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scalix_migrate.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
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


def test_run_says_why_it_waits_and_status_prints_whole_rows_on_a_pipe(tmp_path: Path) -> None:
    from scalix_migrate.sandbox import Sandbox

    with Sandbox(tmp_path / "sandbox") as sb:
        path = sb.write_config(
            tmp_path / "tenant.yaml",
            {"type": "maildir", "path": str(tmp_path / "maildir" / "{email}")},
            tenant="clitest",
        )
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["options"]["users"] = {"include": ["kim.lee@acme.test", "j.mueller@acme.test"]}
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # no profile, no server

        run = _cli("run", str(path), env=env, cwd=REPO, timeout=600)

        assert run.returncode == 0, run.stderr[-3000:]
        assert "starting a temporary local Prefect server" in run.stderr
        # Lines stay whole on a pipe (rich breaks them at 80 columns otherwise).
        reports = (tmp_path / "sandbox" / "reports").resolve()
        assert f"reports: {reports}" in run.stdout.splitlines(), run.stdout
        status = _cli("status", str(path), env=env, cwd=REPO)

    assert status.returncode == 0, status.stderr
    assert "…" not in status.stdout
    rows = list(csv.DictReader(io.StringIO(status.stdout)))
    assert {r["user"]: r["status"] for r in rows} == {
        "kim.lee@acme.test": "done",
        "j.mueller@acme.test": "done",
    }
    assert all(int(r["loaded"]) == int(r["found"]) > 0 for r in rows)


def test_the_api_check_leaves_the_temporary_servers_start_up_allowance(tmp_path: Path) -> None:
    """Prefect reads its settings once, at first import: the check must not come first."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    }
    env["PREFECT_HOME"] = str(tmp_path / "home")
    code = (
        "from scalix_migrate.cli import require_prefect_api\n"
        "require_prefect_api()\n"
        "from prefect.settings import get_current_settings\n"
        "print(get_current_settings().server.ephemeral.startup_timeout_seconds)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["120"]
