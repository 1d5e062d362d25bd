"""Groupware items -> resources, semantic comparison, DAV paths and the groupware config."""

from __future__ import annotations

import pytest

from scalix_migrate.config import parse_config
from scalix_migrate.dav import collection_slug, home_url
from scalix_migrate.errors import ConfigError
from scalix_migrate.groupware_compare import differences
from scalix_migrate.groupware_items import (
    ResourceKind,
    StagedItem,
    build_resources,
    resource_name,
)
from tests.support.groupware import calendar_message, vcard_message

EVENT = """BEGIN:VCALENDAR
VERSION:2.0
METHOD:REQUEST
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20240101T000000Z
DTSTART;TZID=Europe/Berlin:20240108T100000
DTEND;TZID=Europe/Berlin:20240108T110000
SEQUENCE:{seq}
SUMMARY:{summary}
END:VEVENT
END:VCALENDAR
"""


def _item(body: bytes, n: int, folder: str = "Calendar") -> StagedItem:
    return StagedItem.of_message(folder, f"{n:064x}", body)


def _event(uid: str = "e1@x", seq: int = 0, summary: str = "S") -> bytes:
    return calendar_message(EVENT.format(uid=uid, seq=seq, summary=summary))


def test_resource_names_are_the_uid_when_safe_else_a_stable_hash() -> None:
    assert resource_name("040000008200E00074C5B7101A82E008@scalix", ".ics") == (
        "040000008200E00074C5B7101A82E008@scalix.ics"
    )
    odd = resource_name("a/b c{}", ".ics")
    assert odd.startswith("sxm-")
    assert odd.endswith(".ics")
    assert odd == resource_name("a/b c{}", ".ics")
    assert resource_name("x" * 300, ".vcf") != resource_name("x" * 299, ".vcf")


def test_the_same_event_twice_is_one_resource_and_the_later_revision_wins() -> None:
    built = build_resources([_item(_event(seq=0), 1), _item(_event(seq=2, summary="new"), 2)])
    assert [r.name for r in built.resources] == ["e1@x.ics"]
    text = built.resources[0].data.decode()
    assert "SUMMARY:new" in text
    assert "METHOD" not in text
    assert "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin" in text  # named, not given: added
    assert built.resources[0].sources == (f"{2:064x}",)  # the item its data came from


def test_the_output_does_not_depend_on_the_order_of_the_items() -> None:
    items = [_item(_event(uid=f"e{i}@x"), i) for i in range(5)]
    a = build_resources(items)
    b = build_resources(list(reversed(items)))
    assert [r.digest for r in a.resources] == [r.digest for r in b.resources]


def test_an_unknown_tzid_is_kept_as_it_is() -> None:
    body = _event().replace(b"Europe/Berlin", b"Scalix Custom Zone 7")
    (res,) = build_resources([_item(body, 1)]).resources
    assert b"DTSTART;TZID=Scalix Custom Zone 7:20240108T100000" in res.data
    assert b"BEGIN:VTIMEZONE" not in res.data


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (calendar_message("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\n"), "does not parse"),
        (calendar_message("BEGIN:VCALENDAR\nVERSION:2.0\nEND:VCALENDAR\n"), "no VEVENT"),
        (vcard_message("BEGIN:VCARD\nVERSION:3.0\nFN:x\n"), "no BEGIN:VCARD"),
        (vcard_message("BEGIN:VCARD\nVERSION:3.0\nN:a;b\nFN:x\nEND:VCARD\nBEGIN:VCARD\n"), ""),
    ],
)
def test_broken_data_is_an_item_issue_naming_the_item(body: bytes, why: str) -> None:
    built = build_resources([_item(body, 7, folder="Contacts")])
    if not why:  # a good card followed by a truncated one: the good card still counts
        assert len(built.resources) == 1
        return
    (issue,) = built.issues
    assert issue.code == "SXM-GW-001"
    assert issue.folder == "Contacts"
    assert issue.sha256 == f"{7:064x}"
    assert why in issue.detail


def test_distribution_lists_become_groups_with_members() -> None:
    v3 = "BEGIN:VCARD\nVERSION:3.0\nN:Team;;;;\nFN:Team\nEMAIL:a@x\nEMAIL:b@x\nEND:VCARD\n"
    v4 = "BEGIN:VCARD\nVERSION:4.0\nFN:Team\nUID:t4\nEMAIL:a@x\nEND:VCARD\n"
    built = build_resources(
        [
            _item(vcard_message(v3, scalix_class="IPM.DistList"), 1, "Contacts"),
            _item(vcard_message(v4, scalix_class="IPM.DistList"), 2, "Contacts"),
        ]
    )
    kinds = {r.uid: r for r in built.resources}
    assert {r.kind for r in built.resources} == {ResourceKind.group}
    assert b"KIND:group" in kinds["t4"].data
    assert b"MEMBER:mailto:a@x" in kinds["t4"].data
    (v3_res,) = [r for r in built.resources if r.uid != "t4"]
    assert b"X-ADDRESSBOOKSERVER-KIND:group" in v3_res.data
    assert v3_res.data.count(b"X-ADDRESSBOOKSERVER-MEMBER:mailto:") == 2


def test_properties_only_contacts_are_reported_not_dropped() -> None:
    built = build_resources([_item(vcard_message(None), 3, "Contacts")])
    assert built.resources == []
    assert [i.code for i in built.issues] == ["SXM-GW-002"]


def test_semantic_comparison_ignores_what_servers_rewrite_only() -> None:
    sent = (
        b"BEGIN:VCALENDAR\r\nPRODID:-//a//EN\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\n"
        b"DTSTAMP:20240101T000000Z\r\nSUMMARY:a long summary\r\n"
        b"RDATE:20240101T100000Z,20240102T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    stored = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//server//EN\r\nBEGIN:VEVENT\r\n"
        b"SUMMARY:a long\r\n  summary\r\nUID:1\r\nDTSTAMP:20250101T000000Z\r\n"
        b"RDATE:20240102T100000Z\r\nRDATE:20240101T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    assert differences(sent, stored) == []
    changed = stored.replace(b"UID:1", b"UID:1\r\nLOCATION:elsewhere")
    assert differences(sent, changed) == ["extra VCALENDAR/VEVENT LOCATION"]
    assert differences(sent, stored.replace(b"  summary", b"  summari")) == [
        "extra VCALENDAR/VEVENT SUMMARY",
        "missing VCALENDAR/VEVENT SUMMARY",
    ]


def test_presets_place_the_users_collections() -> None:
    assert home_url("https://dav.test/kim@x/", "generic", "caldav", "kim@x") == (
        "https://dav.test/kim@x/"
    )
    assert home_url("https://cloud.test", "nextcloud", "carddav", "kim") == (
        "https://cloud.test/remote.php/dav/addressbooks/users/kim/"
    )
    assert home_url("https://mail.test/", "sogo", "caldav", "kim@x") == (
        "https://mail.test/SOGo/dav/kim@x/Calendar/"
    )
    assert collection_slug("Calendar") == "calendar"
    assert collection_slug("Calendar/Team Größe").startswith("calendar-team-gr-e-")


GOOD = """\
tenant: acme
source:
  server: scalix.acme.test
  server_names: main
  admin_user: sxadmin
  admin_password: ${SXM_TEST_ADMIN_PW}
  test_user: kim@acme.test
destination:
  type: maildir
  path: out/{email}
  calendar:
    type: caldav
    url: https://dav.acme.test/{email}/
    password: ${DAV_PW}
  contacts:
    type: files
    path: out/{email}/contacts
"""


def test_groupware_destinations_are_typed_and_optional() -> None:
    cfg = parse_config(GOOD, "acme.yaml")
    assert cfg.destination.calendar is not None
    assert cfg.destination.calendar.type == "caldav"
    assert cfg.destination.contacts is not None
    assert cfg.destination.contacts.type == "files"
    bare = parse_config(GOOD.split("  calendar:")[0], "acme.yaml")
    assert bare.destination.calendar is None
    assert bare.destination.contacts is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("type: caldav", "type: carddav"),
            "acme.yaml:12 destination.calendar.type: expected one of caldav, files, got 'carddav'",
        ),
        (
            ("url: https://dav", "url: ftp://dav"),
            "acme.yaml:13 destination.calendar.url: expected an http:// or https:// URL, "
            "got 'ftp://dav.acme.test/{email}/'",
        ),
        (
            ("password: ${DAV_PW}", "pasword: ${DAV_PW}"),
            "acme.yaml:14 destination.calendar.pasword: unknown key; did you mean 'password'?",
        ),
        (
            ("password: ${DAV_PW}", "password: hunter2"),
            "acme.yaml:14 destination.calendar.password: expected a secret reference",
        ),
        (
            ("password: ${DAV_PW}", "preset: google\n    password: ${DAV_PW}"),
            "acme.yaml:11 destination.calendar: preset: google needs auth: bearer",
        ),
    ],
)
def test_groupware_config_errors_name_file_line_and_field(
    change: tuple[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace(*change), "acme.yaml")
    assert info.value.problems[0].startswith(expected), info.value.problems
    assert "hunter2" not in str(info.value)


def test_an_edit_without_a_new_sequence_is_won_by_the_newer_item() -> None:
    old = StagedItem.of_message("Calendar", "f" * 64, _event(summary="old"), order=1)
    new = StagedItem.of_message("Calendar", "0" * 64, _event(summary="new"), order=2)
    for items in ([old, new], [new, old]):
        (res,) = build_resources(items).resources
        assert b"SUMMARY:new" in res.data
    card = "BEGIN:VCARD\nVERSION:3.0\nUID:c1\nFN:{}\nN:;;;;\nEND:VCARD\n"
    a = StagedItem.of_message("Contacts", "f" * 64, vcard_message(card.format("Old")), order=1)
    b = StagedItem.of_message("Contacts", "0" * 64, vcard_message(card.format("New")), order=2)
    (contact,) = build_resources([b, a]).resources
    assert b"FN:New" in contact.data
    assert contact.sources == ("0" * 64, "f" * 64)
