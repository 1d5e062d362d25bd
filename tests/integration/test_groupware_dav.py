"""Calendars and address books into a real CalDAV/CardDAV server (Radicale): exactly once,
verified, reconciled after a crash, delta by digest/ETag, broken items named, time zones kept."""

from __future__ import annotations

import base64
import logging
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import icalendar
import pytest
import yaml

from scalix_migrate.dav import Fetched
from scalix_migrate.errors import TransientError, UserError
from scalix_migrate.groupware_sync import (
    FilesSink,
    GroupwareResult,
    dav_client,
    require_verified,
    sync_user,
)
from scalix_migrate.preflight_groupware import groupware_findings
from scalix_migrate.records import ItemClass, ScalixUser
from scalix_migrate.report import write_reports
from scalix_migrate.sandbox.dav_server import RadicaleServer
from scalix_migrate.state import Journal
from scalix_migrate.state.groupware import PUTTING, STORED
from tests.support.groupware import (
    calendar_message,
    dav_config,
    new_user,
    stage_items,
    vcard_message,
)

WEEKLY = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Scalix//Scalix Server//EN
METHOD:REQUEST
BEGIN:VEVENT
UID:weekly-1@scalix.test
DTSTAMP:20240101T000000Z
DTSTART;TZID=W. Europe Standard Time:20240108T100000
DTEND;TZID=W. Europe Standard Time:20240108T110000
RRULE:FREQ=WEEKLY;COUNT=10
EXDATE;TZID=W. Europe Standard Time:20240115T100000
SUMMARY:Jour fixe
ORGANIZER;CN=Kim Lee:mailto:kim@acme.test
ATTENDEE;CN=Bob;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED:mailto:bob@acme.test
BEGIN:VALARM
ACTION:DISPLAY
TRIGGER:-PT15M
DESCRIPTION:Jour fixe
END:VALARM
END:VEVENT
END:VCALENDAR
"""
EXCEPTION = """BEGIN:VCALENDAR
VERSION:2.0
METHOD:REQUEST
BEGIN:VEVENT
UID:weekly-1@scalix.test
DTSTAMP:20240101T000000Z
RECURRENCE-ID;TZID=W. Europe Standard Time:20240122T100000
DTSTART;TZID=W. Europe Standard Time:20240122T140000
DTEND;TZID=W. Europe Standard Time:20240122T150000
SUMMARY:Jour fixe (moved)
END:VEVENT
END:VCALENDAR
"""
ALL_DAY = """BEGIN:VCALENDAR
VERSION:2.0
BEGIN:VEVENT
UID:holiday@scalix.test
DTSTART;VALUE=DATE:20241224
DTEND;VALUE=DATE:20241227
SUMMARY:Weihnachten
END:VEVENT
END:VCALENDAR
"""
FLOATING = """BEGIN:VCALENDAR
VERSION:2.0
BEGIN:VEVENT
DTSTART:20240301T090000
DTEND:20240301T093000
SUMMARY:Floating, and no UID at all
END:VEVENT
END:VCALENDAR
"""
TASK = """BEGIN:VCALENDAR
VERSION:2.0
BEGIN:VTODO
UID:task-1@scalix.test
SUMMARY:Angebot schreiben
DUE;VALUE=DATE:20240315
STATUS:NEEDS-ACTION
PRIORITY:1
END:VTODO
END:VCALENDAR
"""
BROKEN = """BEGIN:VCALENDAR
VERSION:2.0
BEGIN:VEVENT
UID:broken@scalix.test
DTSTART:2024-13-99 nonsense
SUMMARY:broken
END:VEVENT
END:VCALENDAR
"""
CONTACT = """BEGIN:VCARD
VERSION:3.0
UID:eva-kuehn@scalix.test
N:Kühn;Eva;;;
FN:Eva Kühn
EMAIL;TYPE=INTERNET:eva@contacts.test
TEL;TYPE=WORK:+49 30 1234
NOTE:A long note that will certainly be folded by the server when it writes it back again.
END:VCARD
"""
DIST_LIST = """BEGIN:VCARD
VERSION:3.0
N:Team;;;;
FN:Team
EMAIL:ana@contacts.test
EMAIL:tom@contacts.test
END:VCARD
"""


def _setup(tmp_path: Path, radicale: RadicaleServer, **dest: Any) -> tuple[Any, ScalixUser]:
    user = new_user()
    password = uuid.uuid4().hex
    radicale.add_user(user.key, password)
    return dav_config(tmp_path, radicale.url, password, **dest), user


def _stage_all(cfg: Any, journal: Journal, user: ScalixUser) -> None:
    stage_items(
        cfg,
        journal,
        user,
        "Calendar",
        [
            (calendar_message(WEEKLY), ItemClass.appointment),
            (calendar_message(EXCEPTION), ItemClass.appointment),
            (calendar_message(ALL_DAY), ItemClass.appointment),
            (calendar_message(FLOATING), ItemClass.appointment),
            (calendar_message(BROKEN), ItemClass.appointment),
        ],
        folder_class="IPF.Appointment",
    )
    stage_items(
        cfg,
        journal,
        user,
        "Tasks",
        [(calendar_message(TASK, scalix_class="IPM.Task"), ItemClass.task)],
        folder_class="IPF.Task",
    )
    stage_items(
        cfg,
        journal,
        user,
        "Contacts",
        [
            (vcard_message(CONTACT), ItemClass.contact),
            (vcard_message(DIST_LIST, scalix_class="IPM.DistList"), ItemClass.contact),
            (vcard_message(None), ItemClass.contact),  # only Scalix's properties part
        ],
        folder_class="IPF.Contact",
    )


def _server_state(cfg: Any, user: ScalixUser) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for dest, slugs in [
        (cfg.destination.calendar, ["calendar", "tasks"]),
        (cfg.destination.contacts, ["contacts"]),
    ]:
        with dav_client(dest, cfg, user) as client:
            for slug in slugs:
                out[slug] = client.list_etags(client.collection_url(slug))
    return out


def _get(cfg: Any, user: ScalixUser, path: str) -> bytes:
    with dav_client(cfg.destination.calendar, cfg, user) as client:
        got = client.fetch(client.home + path)
    assert got is not None
    return got.data


def test_every_item_arrives_once_verified_with_recurrence_zones_and_groups(
    tmp_path: Path, radicale: RadicaleServer
) -> None:
    cfg, user = _setup(tmp_path, radicale)
    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
        result = sync_user(cfg, journal, user)
        rows = journal.groupware_rows(cfg.tenant, user.key)
    flat = result.flat()
    # Weekly master + its exception are one resource; the broken item is not a resource.
    assert flat["events_found"] == 3
    assert flat["events_created"] == 3
    assert flat["events_verified"] == 3
    assert flat["tasks_created"] == 1
    assert flat["tasks_verified"] == 1
    assert flat["contacts_created"] == 1
    assert flat["groups_created"] == 1
    assert flat["contacts_verified"] == 1
    assert flat["groups_verified"] == 1
    assert flat["broken"] == 1
    assert flat["message_only"] == 1
    assert flat["resources_failed"] == 0
    assert result.mismatched == 0
    broken = [r for r in rows.values() if r.error_code == "SXM-GW-001"]
    assert len(broken) == 1
    assert broken[0].folder == "Calendar"
    assert any("Calendar item" in p for p in result.problems)  # named: folder + message hash

    state = _server_state(cfg, user)
    assert len(state["calendar"]) == 3
    assert len(state["tasks"]) == 1
    assert len(state["contacts"]) == 2
    assert "weekly-1@scalix.test.ics" in state["calendar"]

    weekly = icalendar.Calendar.from_ical(_get(cfg, user, "calendar/weekly-1@scalix.test.ics"))
    events = list(weekly.walk("VEVENT"))
    assert len(events) == 2  # master and exception in one resource
    assert "METHOD" not in weekly  # forbidden in a stored calendar object (RFC 4791 §4.1)
    master = next(e for e in events if "RECURRENCE-ID" not in e)
    assert master["DTSTART"].params["TZID"] == "W. Europe Standard Time"
    assert [str(z["TZID"]) for z in weekly.walk("VTIMEZONE")] == ["W. Europe Standard Time"]
    assert "RRULE" in master
    assert "EXDATE" in master
    assert master.walk("VALARM")
    assert str(master["ATTENDEE"]) == "mailto:bob@acme.test"

    holiday = _get(cfg, user, "calendar/holiday@scalix.test.ics").decode()
    assert "DTSTART;VALUE=DATE:20241224" in holiday
    floating = [n for n in state["calendar"] if n.startswith("sxm-")]
    assert len(floating) == 1  # no UID: a name (and UID) derived from its content
    text = _get(cfg, user, "calendar/" + floating[0]).decode()
    assert "DTSTART:20240301T090000\r\n" in text  # still floating: no Z, no TZID


def test_a_rerun_adds_nothing_and_a_delta_sends_only_the_changed_item(
    tmp_path: Path, radicale: RadicaleServer
) -> None:
    cfg, user = _setup(tmp_path, radicale)
    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
        sync_user(cfg, journal, user)
        before = _server_state(cfg, user)
        again = sync_user(cfg, journal, user)
        assert sum(again.created.values()) == 0
        assert sum(again.updated.values()) == 0
        assert sum(again.unchanged.values()) == 6
        assert _server_state(cfg, user) == before

        # Delta: the holiday was edited in Scalix (a new message, a higher SEQUENCE).
        edited = ALL_DAY.replace("SUMMARY:Weihnachten", "SEQUENCE:1\nSUMMARY:Weihnachtsferien")
        stage_items(
            cfg, journal, user, "Calendar", [(calendar_message(edited), ItemClass.appointment)]
        )
        delta = sync_user(cfg, journal, user)
    assert delta.updated["event"] == 1
    assert sum(delta.created.values()) == 0
    after = _server_state(cfg, user)
    changed = {n for n, tag in after["calendar"].items() if before["calendar"][n] != tag}
    assert changed == {"holiday@scalix.test.ics"}
    assert after["tasks"] == before["tasks"]
    assert after["contacts"] == before["contacts"]
    assert "Weihnachtsferien" in _get(cfg, user, "calendar/holiday@scalix.test.ics").decode()


def test_a_crash_after_the_put_is_reconciled_without_a_second_copy(
    tmp_path: Path, radicale: RadicaleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, user = _setup(tmp_path, radicale)
    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
        real = Journal.gw_record
        crashes = {"n": 0}

        def crash_on_second_stored(self: Journal, *a: Any, state: str, **kw: Any) -> None:
            if state == STORED:
                crashes["n"] += 1
                if crashes["n"] == 2:
                    raise KeyboardInterrupt("worker killed after the PUT landed")
            real(self, *a, state=state, **kw)

        monkeypatch.setattr(Journal, "gw_record", crash_on_second_stored)
        with pytest.raises(KeyboardInterrupt):
            sync_user(cfg, journal, user)
        monkeypatch.setattr(Journal, "gw_record", real)
        left = [r for r in journal.groupware_rows(cfg.tenant, user.key).values()]
        assert [r.state for r in left].count(PUTTING) == 1
        result = sync_user(cfg, journal, user)
    assert sum(result.reconciled.values()) == 1
    assert sum(result.verified.values()) == 6
    assert sum(result.failed.values()) == 0
    state = _server_state(cfg, user)
    assert (len(state["calendar"]), len(state["tasks"]), len(state["contacts"])) == (3, 1, 2)


def test_a_server_killed_mid_run_is_transient_and_the_retry_completes(tmp_path: Path) -> None:
    server = RadicaleServer(tmp_path / "dav").start()
    try:
        cfg, user = _setup(tmp_path, server)
        with Journal.open(directory=tmp_path / "state") as journal:
            _stage_all(cfg, journal, user)
            real = Journal.gw_record
            calls = {"n": 0}

            def kill_server_midway(self: Journal, *a: Any, **kw: Any) -> None:
                calls["n"] += 1
                if calls["n"] == 6:
                    server.stop()
                real(self, *a, **kw)

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(Journal, "gw_record", kill_server_midway)
                with pytest.raises(TransientError) as info:
                    sync_user(cfg, journal, user)
            assert info.value.code == "SXM-GW-007"
            server.start()  # same storage, a new port
            cfg = dav_config(tmp_path, server.url, cfg.destination.calendar.password.ref)
            result = sync_user(cfg, journal, user)
        assert sum(result.failed.values()) == 0
        assert result.mismatched == 0
        state = _server_state(cfg, user)
        assert (len(state["calendar"]), len(state["tasks"]), len(state["contacts"])) == (3, 1, 2)
    finally:
        server.stop()


def test_a_different_resource_of_the_same_name_is_never_overwritten(
    tmp_path: Path, radicale: RadicaleServer
) -> None:
    cfg, user = _setup(tmp_path, radicale)
    other = TASK.replace("SUMMARY:Angebot schreiben", "SUMMARY:written by someone else")
    with dav_client(cfg.destination.calendar, cfg, user) as client:
        url = client.ensure_collection("tasks", "Tasks")
        assert client.create(url + "task-1@scalix.test.ics", other.encode(), "text/calendar")
    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
        result = sync_user(cfg, journal, user)
    assert result.failed["task"] == 1
    assert result.created["task"] == 0
    assert any("same UID exists" in p for p in result.problems)
    assert b"written by someone else" in _get(cfg, user, "tasks/task-1@scalix.test.ics")


def test_files_destination_writes_each_item_once(tmp_path: Path) -> None:
    files = {"type": "files", "path": str(tmp_path / "gw" / "{email}")}
    cfg = dav_config(tmp_path, "http://unused.test/", "x", calendar=files, contacts=files)
    user = new_user()
    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
        first = sync_user(cfg, journal, user)
        second = sync_user(cfg, journal, user)
    assert sum(first.created.values()) == 6
    assert sum(first.verified.values()) == 6
    assert sum(second.created.values()) == 0
    assert sum(second.unchanged.values()) == 6
    root = tmp_path / "gw"
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert len(written) == 6
    assert f"{user.key}/calendar/calendar/holiday@scalix.test.ics" in written


def test_a_refused_login_fails_the_user_without_the_password(
    tmp_path: Path, radicale: RadicaleServer
) -> None:
    user = new_user()
    radicale.add_user(user.key, "right-password-1")
    cfg = dav_config(tmp_path, radicale.url, "wrong-password-2")
    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
        with (
            pytest.raises(UserError) as info,
            dav_client(cfg.destination.calendar, cfg, user) as client,
        ):
            client.check_login()
    assert info.value.code == "SXM-GW-006"
    assert "wrong-password-2" not in str(info.value)


def test_result_counts_are_plain_data() -> None:
    flat = GroupwareResult(user="u").flat()
    assert all(isinstance(v, int | str) for v in flat.values())
    assert isinstance(httpx.BasicAuth("a", "b"), httpx.Auth)


def test_the_report_counts_each_kind_and_names_the_broken_item(
    tmp_path: Path, radicale: RadicaleServer
) -> None:
    cfg, user = _setup(tmp_path, radicale)
    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
        sync_user(cfg, journal, user)
        files = write_reports(journal, cfg.tenant, tmp_path / "reports")
    row = next(r for r in files.users if r["user"] == user.key)
    assert (row["events_found"], row["events_created"], row["events_verified"]) == (3, 3, 3)
    assert (row["tasks_found"], row["tasks_created"], row["tasks_verified"]) == (1, 1, 1)
    assert (row["contacts_found"], row["contacts_verified"]) == (2, 2)  # a contact, a group
    assert row["message_only"] == 1
    assert row["groupware_failed"] == 1
    failures = files.failures_csv.read_text(encoding="utf-8")
    assert "SXM-GW-001" in failures
    assert "calendar-failed" in failures
    assert "events 3 / 3 / 3" in files.summary


def test_preflight_checks_login_scratch_collections_and_the_size_limit(tmp_path: Path) -> None:
    with RadicaleServer(tmp_path / "dav", max_resource_size=4096) as server:
        cfg, user = _setup(tmp_path, server)
        # Radicale tells max-resource-size for calendars only (not for address books).
        found = groupware_findings(cfg, user)
        assert [(f.code, f.message.split(":")[0]) for f in found] == [
            ("PF-GW-006", "destination.calendar")
        ]
        with dav_client(cfg.destination.calendar, cfg, user) as client:
            assert client.list_etags(client.home) == {}  # the scratch collections are gone
        bad = dav_config(tmp_path, server.url, "not-the-password")
        found = groupware_findings(bad, user)
        assert [f.code for f in found] == ["PF-GW-003", "PF-GW-003"]
        assert all("not-the-password" not in f.message for f in found)
        big = WEEKLY.replace("SUMMARY:Jour fixe", "SUMMARY:Jour fixe\nDESCRIPTION:" + "x" * 6000)
        with Journal.open(directory=tmp_path / "state") as journal:
            stage_items(
                cfg, journal, user, "Calendar", [(calendar_message(big), ItemClass.appointment)]
            )
            result = sync_user(cfg, journal, user)
    assert result.failed["event"] == 1
    assert result.created["event"] == 0
    assert any("over the server's limit of 4096 bytes" in p for p in result.problems)
    gone = RadicaleServer(tmp_path / "dav2")
    gone.port = 9  # nothing listens there
    assert [f.code for f in groupware_findings(dav_config(tmp_path, gone.url, "x"), user)] == [
        "PF-GW-001",
        "PF-GW-001",
    ]


def test_no_dav_password_in_debug_logs_results_or_the_journal(
    tmp_path: Path, radicale: RadicaleServer, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, user = _setup(tmp_path, radicale)
    assert cfg.destination.calendar is not None
    assert cfg.destination.calendar.type == "caldav"
    assert cfg.destination.calendar.password is not None
    password = cfg.destination.calendar.password.ref
    basic = base64.b64encode(f"{user.key}:{password}".encode()).decode()
    with caplog.at_level(logging.DEBUG), Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
        result = sync_user(cfg, journal, user)
        rows = journal.groupware_rows(cfg.tenant, user.key)
    assert sum(result.verified.values()) == 6
    assert "httpx" in caplog.text or "httpcore" in caplog.text  # the client did log
    for text in (caplog.text, repr(result), repr(rows), str(result.flat())):
        assert password not in text
        assert basic not in text


_CHILD = """
import sys, time
from pathlib import Path
from scalix_migrate.config import load_config
from scalix_migrate.dav import DavClient
from scalix_migrate.groupware_sync import sync_user
from scalix_migrate.records import ScalixUser
from scalix_migrate.state import Journal

cfg = load_config(sys.argv[1])
marker = Path(sys.argv[2])
user = ScalixUser(display_name="x", mailnode="main", addresses=(sys.argv[3],))
real = DavClient.create
landed = []

def create_then_hang(self, url, data, content_type):
    etag = real(self, url, data, content_type)
    landed.append(url)
    if len(landed) == 3:
        marker.write_text(url)  # the PUT landed; the journal still says "putting"
        time.sleep(120)
    return etag

DavClient.create = create_then_hang
with Journal.open(directory=cfg.options.state.dir) as journal:
    sync_user(cfg, journal, user)
"""


def test_a_worker_killed_between_put_and_journal_is_reconciled_by_the_next_run(
    tmp_path: Path, radicale: RadicaleServer
) -> None:
    cfg, user = _setup(tmp_path, radicale)
    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    marker = tmp_path / "landed"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(marker), user.key],
        cwd=Path(__file__).parents[2],
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the worker never got to its third PUT"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with Journal.open(directory=tmp_path / "state") as journal:
        putting = [
            r.name
            for r in journal.groupware_rows(cfg.tenant, user.key).values()
            if r.state == PUTTING
        ]
        assert putting == [marker.read_text().rsplit("/", 1)[-1]]
        result = sync_user(cfg, journal, user)
    assert sum(result.reconciled.values()) == 1
    assert sum(result.created.values()) == 6 - 3
    assert sum(result.verified.values()) == 6
    state = _server_state(cfg, user)
    assert (len(state["calendar"]), len(state["tasks"]), len(state["contacts"])) == (3, 1, 2)


def test_a_read_back_mismatch_fails_the_user_and_the_rerun_reads_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"type": "files", "path": str(tmp_path / "gw" / "{email}")}
    cfg = dav_config(tmp_path, "http://unused.test/", "x", calendar=files, contacts=files)
    user = new_user()
    real = FilesSink.fetch
    tampered: list[str] = []

    def rewritten_once(self: FilesSink, url: str) -> Fetched | None:
        got = real(self, url)
        if got is not None and url.endswith("holiday@scalix.test.ics") and not tampered:
            tampered.append(url)
            return Fetched(got.data.replace(b"Weihnachten", b"Ostern"), got.etag)
        return got

    with Journal.open(directory=tmp_path / "state") as journal:
        _stage_all(cfg, journal, user)
        monkeypatch.setattr(FilesSink, "fetch", rewritten_once)
        first = sync_user(cfg, journal, user)
        with pytest.raises(UserError) as info:
            require_verified(first)
        assert info.value.code == "SXM-GW-008"
        assert any("SUMMARY" in p for p in first.problems)
        second = sync_user(cfg, journal, user)
    require_verified(second)
    assert sum(second.created.values()) == 0
    assert second.verified["event"] == 3
    assert sum(second.failed.values()) == 0
