"""Each network fault is named for what happened, with a remedy naming the config field.

Faults come from a TCP proxy in front of the real Dovecot servers (or a closed port, or the
wrong TLS mode); nothing here is simulated in-process.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import CATALOGUE, TransientError
from scalix_migrate.preflight import run_preflight
from scalix_migrate.preflight_destination import imap_destination_findings
from scalix_migrate.records import ScalixUser
from scalix_migrate.sandbox.directory import SeedMessage
from scalix_migrate.user_context import open_source
from tests.integration.scalix_bed import TenantSlice, config
from tests.support.faultproxy import Fault, FaultProxy

WHEN = datetime(2022, 5, 6, 7, 8, 9, tzinfo=UTC)
BODY = b"Subject: big\r\nMessage-ID: <big@x>\r\n\r\n" + b"0123456789abcdef\r\n" * 4000


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seeded(bed: TenantSlice) -> ScalixUser:
    u = bed.new_user("cls")
    bed.testbed.seed_messages(u.addresses[0], [SeedMessage("INBOX", BODY, [], WHEN)])
    return ScalixUser(
        display_name=u.display_name,
        mailnode=u.mailnode,
        auth_id=u.auth_id,
        addresses=tuple(u.addresses),
    )


def _read_all(cfg: TenantConfig, user: ScalixUser) -> None:
    with open_source(cfg, user) as box:
        inbox = next(f for f in box.list_folders() if f.name == "INBOX")
        box.examine(inbox)
        infos = list(box.message_info(inbox, box.uids_above(inbox, 0)))
        for _ in box.fetch(inbox, infos):
            pass


def _source_error(cfg: TenantConfig, user: ScalixUser) -> TransientError:
    with pytest.raises(TransientError) as caught:
        _read_all(cfg, user)
    err = caught.value
    assert "b'" not in str(err)
    assert err.remedy == CATALOGUE[err.code].remedy
    return err


def test_source_refused_is_unreachable_and_names_host_and_port(
    bed: TenantSlice, tmp_path: Path
) -> None:
    user = _seeded(bed)
    err = _source_error(config(bed, tmp_path, source={"imap": {"port": _closed_port()}}), user)
    assert err.code == "SXM-IMAP-001"
    assert "refused the connection" in err.message
    assert "source.imap.port" in err.remedy


def test_source_dropped_mid_fetch_is_a_lost_connection_not_a_config_problem(
    bed: TenantSlice, source_proxy: FaultProxy, tmp_path: Path
) -> None:
    user = _seeded(bed)
    source_proxy.always(Fault(drop_on=b"0123456789abcdef"))
    err = _source_error(config(bed, tmp_path, source={"imap": {"port": source_proxy.port}}), user)
    assert err.code == "SXM-IMAP-007"
    assert err.folder == "INBOX"
    assert "dropped the connection" in err.message
    assert "host/port" not in err.remedy


def test_source_stalled_mid_fetch_is_a_timeout_within_the_configured_time(
    bed: TenantSlice, source_proxy: FaultProxy, tmp_path: Path
) -> None:
    user = _seeded(bed)
    cfg = config(bed, tmp_path, source={"imap": {"port": source_proxy.port, "timeout_s": 2}})
    # Greeting, login, LIST, EXAMINE and the metadata FETCH pass; the body FETCH stalls.
    with open_source(cfg, user) as box:
        inbox = next(f for f in box.list_folders() if f.name == "INBOX")
        box.examine(inbox)
        infos = list(box.message_info(inbox, box.uids_above(inbox, 0)))
        source_proxy.arm_live(Fault(stall_after=10))
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            for _ in box.fetch(inbox, infos):
                pass
    took = time.monotonic() - started
    assert caught.value.code == "SXM-IMAP-008"
    assert "source.imap.timeout_s" in caught.value.remedy
    assert took < 2 + 3  # the read timeout, not forever


def test_source_tls_mode_that_does_not_match_the_port_is_a_tls_error(
    bed: TenantSlice, tmp_path: Path
) -> None:
    user = _seeded(bed)
    cfg = config(bed, tmp_path, source={"imap": {"tls": "implicit", "verify_certificate": False}})
    err = _source_error(cfg, user)  # implicit TLS to Dovecot's plain port 143-alike
    assert err.code == "SXM-IMAP-009"
    assert "source.imap.tls" in err.remedy


def _dest(bed: TenantSlice, **kw: Any) -> dict[str, Any]:
    return {
        "type": "imap",
        "host": "127.0.0.1",
        "port": bed.testbed.dest_imap_port,
        "tls": "none",
        "timeout_s": 5,
        "password": bed.testbed.dest_password,
        **kw,
    }


def test_destination_refused_names_destination_port(bed: TenantSlice, tmp_path: Path) -> None:
    user = _seeded(bed)
    cfg = config(bed, tmp_path, destination=_dest(bed, port=_closed_port()))
    assert cfg.destination.type == "imap"
    (f,) = [
        f
        for f in imap_destination_findings(cfg.destination, cfg, user)
        if f.severity.value == "blocking"
    ]
    assert f.code == "PF-DST-001"
    assert "refused the connection" in f.message
    assert "destination.port" in f.remedy


def test_destination_wrong_password_names_destination_password(
    bed: TenantSlice, tmp_path: Path
) -> None:
    user = _seeded(bed)
    cfg = config(bed, tmp_path, destination=_dest(bed, password="wrong-pw-x"))
    assert cfg.destination.type == "imap"
    (f,) = [
        f
        for f in imap_destination_findings(cfg.destination, cfg, user)
        if f.severity.value == "blocking"
    ]
    assert f.code == "PF-DST-002"
    assert "destination.password" in f.remedy
    assert "b'" not in f.message
    assert "wrong-pw-x" not in f.message


def test_refused_mboxadmin_login_has_the_servers_words_not_a_bytes_repr(
    bed: TenantSlice, tmp_path: Path
) -> None:
    t = bed.new_user("tst")
    cfg = config(
        bed, tmp_path, source={"test_user": t.addresses[0], "admin_password": "not-the-one"}
    )
    report = run_preflight(cfg, check_folders=False)
    (f,) = [f for f in report.findings if f.code == "PF-TST-003"]
    assert "[b'" not in f.message
    assert "b'" not in f.message
    assert "source.admin_password" in f.remedy
    assert "not-the-one" not in f.message
