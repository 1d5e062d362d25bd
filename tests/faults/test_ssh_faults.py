"""SSH faults during admin commands, injected by a TCP proxy in front of the real sshd."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scalix_migrate.discovery import discover_users
from scalix_migrate.errors import TransientError
from scalix_migrate.scalix.admin import BatchItem, ScalixAdmin
from tests.integration.scalix_bed import TenantSlice, config
from tests.support.faultproxy import Fault, FaultProxy


def _users(bed: TenantSlice, n: int) -> list[str]:
    return [bed.new_user("ssh").auth_id for _ in range(n)]


def test_a_connection_dropped_mid_batch_is_reconnected_and_only_the_rest_rerun(
    bed: TenantSlice, ssh_proxy: FaultProxy, tmp_path: Path
) -> None:
    names = _users(bed, 11)
    items = [BatchItem("omshowu_user", {"name": n}) for n in names]
    cfg = config(bed, tmp_path, ssh={"port": ssh_proxy.port})
    with ScalixAdmin(cfg) as admin:
        clean = admin.run_batch(items)
        # The next exec's output is cut ~1.5 KB in: a few commands have finished by then.
        ssh_proxy.arm_live(Fault(drop_after=1500))
        started = time.monotonic()
        faulted = admin.run_batch(items)
        took = time.monotonic() - started
        assert admin.reconnects == 1
    assert ssh_proxy.faults_fired == 1
    assert ssh_proxy.connections == 2
    assert [(r.exit_status, r.stdout) for r in faulted] == [
        (r.exit_status, r.stdout) for r in clean
    ]
    assert all(r.ok for r in faulted)
    assert took < cfg.source.ssh.command_timeout_s


def test_discovery_survives_a_dropped_connection(
    bed: TenantSlice, ssh_proxy: FaultProxy, tmp_path: Path
) -> None:
    names = set(_users(bed, 6))
    cfg = config(bed, tmp_path, ssh={"port": ssh_proxy.port})
    # Every connection is cut once its first ~3 KB (handshake, login, the first outputs) passed.
    ssh_proxy.plan(Fault(drop_after=6000))
    found = discover_users(cfg)
    assert ssh_proxy.faults_fired == 1
    assert names <= {u.auth_id for u in found.all_users}
    assert found.failures == []
    assert all(u.mailbox_kib is not None for u in found.all_users)


def test_a_connection_lost_every_time_ends_as_a_bounded_transient_error(
    bed: TenantSlice, ssh_proxy: FaultProxy, tmp_path: Path
) -> None:
    names = _users(bed, 4)
    cfg = config(bed, tmp_path, ssh={"port": ssh_proxy.port, "reconnect_attempts": 2})
    with ScalixAdmin(cfg) as admin:
        (handshake,) = ssh_proxy.live_sent()
        # This connection and each one after it drop 200 bytes after their login.
        ssh_proxy.arm_live(Fault(drop_after=200))
        ssh_proxy.plan(*[Fault(arm_after=handshake, drop_after=200)] * 5)
        with pytest.raises(TransientError, match=r"SXM-SSH-007.*lost 3 times") as caught:
            admin.run_batch([BatchItem("omshowu_user", {"name": n}) for n in names])
    assert ssh_proxy.connections == 3
    assert "end markers" not in str(caught.value)


def test_a_slow_ssh_link_gives_the_same_discovery(
    bed: TenantSlice, ssh_proxy: FaultProxy, tmp_path: Path
) -> None:
    names = set(_users(bed, 4))
    clean = discover_users(config(bed, tmp_path / "clean"))
    ssh_proxy.always(Fault(trickle=(256, 0.001)))
    slow = discover_users(config(bed, tmp_path / "slow", ssh={"port": ssh_proxy.port}))
    assert names <= {u.auth_id for u in slow.all_users}
    assert slow.all_users == clean.all_users
    assert slow.failures == clean.failures == []


def test_a_stalled_ssh_link_is_a_command_timeout_within_the_configured_time(
    bed: TenantSlice, ssh_proxy: FaultProxy, tmp_path: Path
) -> None:
    names = _users(bed, 3)
    cfg = config(bed, tmp_path, ssh={"port": ssh_proxy.port, "command_timeout_s": 2})
    with ScalixAdmin(cfg) as admin:
        # Part of the output arrives, then nothing (a stall before the exec itself is a channel
        # that cannot open: reconnected like a drop).
        ssh_proxy.arm_live(Fault(stall_after=1500))
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            admin.run_batch([BatchItem("omshowu_user", {"name": n}) for n in names])
    assert time.monotonic() - started < 2 + 3
    assert caught.value.code == "SXM-SSH-008"
    assert "source.ssh.command_timeout_s" in caught.value.remedy
