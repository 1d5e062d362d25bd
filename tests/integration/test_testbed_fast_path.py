"""The test bed's opt-in fast path (``running_testbed(fast_emulators=True)``, benchmark only)
answers the admin client's batches exactly like the default bed's real ``/bin/sh``, and still
hands any other line to the real shell."""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from scalix_migrate.sandbox.directory import Directory, DirectoryUser
from tests.testbed import ScalixTestbed, running_testbed
from tests.testbed import TestbedError as BedError


@pytest.fixture(scope="module")
def fast_bed() -> Iterator[ScalixTestbed]:
    try:
        with running_testbed(fast_emulators=True) as bed:
            yield bed
    except BedError as exc:
        pytest.fail(f"the real-server test bed cannot start: {exc}", pytrace=False)


def _ssh(bed: ScalixTestbed, line: str) -> tuple[int, str, str]:
    client = paramiko.SSHClient()
    client.load_host_keys(str(bed.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port=bed.ssh_port,
            username=bed.ssh_user,
            key_filename=str(bed.ssh_key_file),
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
        _, stdout, stderr = client.exec_command(line, timeout=60)
        out, err = stdout.read().decode(), stderr.read().decode()
        return stdout.channel.recv_exit_status(), out, err
    finally:
        client.close()


def test_fast_path_is_configured_only_when_asked(
    testbed: ScalixTestbed, fast_bed: ScalixTestbed
) -> None:
    def force_command(bed: ScalixTestbed) -> str:
        return (bed.workdir / "ssh" / "force-command.sh").read_text()

    assert "emulator_entry.py" in force_command(fast_bed)
    assert "emulator_entry.py" not in force_command(testbed)
    assert 'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"' in force_command(testbed)


def test_batches_answer_like_the_real_shell(
    testbed: ScalixTestbed, fast_bed: ScalixTestbed
) -> None:
    tag = secrets.token_hex(4)
    marker = Path(f"/tmp/pwned-{tag}")
    hostile = DirectoryUser(
        display_name=f"o'brien; touch {marker}",
        mailnode="primary",
        auth_id=f"ob{tag}",
        addresses=[f"ob.{tag}@example.test"],
        password="x",
        mailbox_kib=42,
        store_limit_kib=1000,
    )

    def add(d: Directory) -> None:
        d.users.append(hostile)

    answers = []
    for bed in (testbed, fast_bed):
        bed.update_directory(add)
        name = shlex.quote(hostile.name)
        bin_dir = shlex.quote(str(bed.bin_dir))
        line = "; ".join(
            f'{cmd}; echo "@@SXM@@ $?"'
            for cmd in (
                f"OMCURRENT=sx sudo -n {bin_dir}/omshowu -n {name} -f",
                f"{bin_dir}/sxdu -a {name}",
                f"{bin_dir}/omlimit -u {name} -r",
                f"{bin_dir}/omshowu -n 'Nobody {tag}' -f",
                f"omshowu -n {hostile.auth_id} -f",  # bare name, found through PATH
            )
        )
        answers.append(_ssh(bed, line))
    assert answers[0] == answers[1]
    status, out, err = answers[1]
    assert status == 0
    assert f"Authentication ID: {hostile.auth_id}" in out
    assert f"42\t{hostile.name}" in out
    assert out.count("@@SXM@@ 0") == 4
    assert out.count(f"Authentication ID: {hostile.auth_id}") == 2
    assert "@@SXM@@ 1" in out
    assert f'omshowu: user "Nobody {tag}" not found' in err
    assert not marker.exists()


def test_other_lines_still_run_through_the_real_shell(fast_bed: ScalixTestbed) -> None:
    status, out, _ = _ssh(fast_bed, "echo abc | tr a-c x-z; echo -n end; command -v omshowu")
    assert (status, out) == (0, f"xyz\nend{fast_bed.bin_dir}/omshowu\n")
