"""Parsers of Scalix admin output, on captured shapes (scalix.md §1, §7) and variations."""

from __future__ import annotations

from scalix_migrate.scalix.parsers import (
    UserListEntry,
    parse_key_values,
    parse_mailnodes,
    parse_service_status,
    parse_sessions,
    parse_size_kib,
    parse_store_limit,
    parse_sxdu,
    parse_user_details,
    parse_user_list,
)

ENTRY = UserListEntry("Kim Lee", "scalix,demo", "Kim Lee/scalix,demo/CN=Kim Lee")


def test_user_list_captured_shape_and_tagged_mailnode() -> None:
    text = (
        "Mr Minion/sheep/CN=Mr Minion\n"
        "\n"
        "sxadmin/web/CN=sxadmin\n"
        "John Smith/OU1=scalix/OU2=demo/CN=John Smith\n"
        "  Spaced Name  / Node , Two /CN=Spaced Name\n"
        "Total: 4 users\n"
    )
    parsed = parse_user_list(text)
    assert [(e.display_name, e.mailnode) for e in parsed.entries] == [
        ("Mr Minion", "sheep"),
        ("sxadmin", "web"),
        ("John Smith", "scalix,demo"),
        ("Spaced Name", "Node , Two"),
    ]
    assert parsed.unparsed == ["Total: 4 users"]


def test_user_list_shell_metacharacters_are_just_a_name() -> None:
    parsed = parse_user_list("o'brien; touch /tmp/pwned/demo/CN=o'brien; touch /tmp/pwned\n")
    assert parsed.entries[0].display_name == "o'brien; touch /tmp/pwned"
    assert parsed.entries[0].mailnode == "demo"
    d = parse_user_details(
        parsed.entries[0], "User Name: o'brien; touch /tmp/pwned/demo/CN=o'brien; touch /tmp/pwned"
    )
    assert d.user.name == "o'brien; touch /tmp/pwned/demo"
    parsed = parse_user_list("o'brien; touch $(id)/demo/CN=o'brien; touch $(id)\n")
    assert parsed.entries[0].display_name == "o'brien; touch $(id)"
    assert parsed.entries[0].mailnode == "demo"


def test_key_values_separators_case_spacing_and_colons_in_values() -> None:
    kv = parse_key_values(
        "User Name: Kim Lee/scalix,demo/CN=Kim Lee\n"
        "MAIL   ACCOUNT  :   Unlocked\n"
        "Comment = note: has = and : inside\n"
        "Last Sign-on: 2024-01-02 10:11:12\n"
        "----------------\n"
        "this line has no separator\n"
        ": value without key\n"
    )
    assert kv.get("user name") == "Kim Lee/scalix,demo/CN=Kim Lee"
    assert kv.get("Mail Account") == "Unlocked"
    assert kv.get("comment") == "note: has = and : inside"
    assert kv.get("last sign-on") == "2024-01-02 10:11:12"
    assert kv.unparsed == ["this line has no separator", ": value without key"]


def test_user_details_full_record_with_several_addresses_in_order() -> None:
    text = (
        "User Name: Kim Lee/scalix,demo/CN=Kim Lee\n"
        "Mail Account: Locked\n"
        "Authentication ID: kim.lee@example.test\n"
        "Internet Address: kim@example.test\n"
        "Internet Address: kim.lee@example.test\n"
        "internet address = KIM@example.test\n"
        "Class: Limited\n"
        "Admin Capabilities: +mboxadmin, ADMIN\n"
        "Full Administrator: Yes\n"
        "Message Store: No\n"
        "Favourite Colour: blue: really\n"
        "garbage line\n"
    )
    d = parse_user_details(ENTRY, text)
    u = d.user
    assert u.display_name == "Kim Lee"
    assert u.mailnode == "scalix,demo"
    assert u.addresses == ("kim@example.test", "kim.lee@example.test")
    assert u.primary_address == "kim@example.test"
    assert u.auth_id == "kim.lee@example.test"
    assert u.locked is True
    assert u.user_class == "Limited"
    assert u.capabilities == frozenset({"mboxadmin", "admin"})
    assert u.full_admin is True
    assert u.has_message_store is False
    assert u.details["Favourite Colour"] == "blue: really"
    assert d.unparsed == ["garbage line"]


def test_user_details_minimal_confirmed_keys_only() -> None:
    d = parse_user_details(ENTRY, "User Name : Kim Lee/scalix,demo\nMail Account : Unlocked\n")
    assert d.user.locked is False
    assert d.user.addresses == ()
    assert d.user.full_admin is None
    assert d.user.has_message_store is None
    assert d.unparsed == []


def test_store_limit_and_sizes() -> None:
    assert parse_store_limit("Message Store Size Limit: 0kb\n").kib == 0
    assert parse_store_limit("message store size limit =  2048 KB\nOther Limit: 5kb\n").kib == 2048
    assert parse_store_limit("Message Store Size Limit: 2MB").kib == 2048
    assert parse_store_limit("Message Store Size Limit: unlimited").kib == 0
    bad = parse_store_limit("no limits here")
    assert bad.kib is None
    assert bad.unparsed == ["no limits here"]
    weird = parse_store_limit("Message Store Size Limit: lots")
    assert weird.kib is None
    assert weird.unparsed == ["lots"]
    assert parse_size_kib("1.5 GiB") == 1572864
    assert parse_size_kib("abc") is None


def test_sxdu() -> None:
    assert parse_sxdu("1234\tKim Lee/scalix,demo\n").kib == 1234
    m = parse_sxdu("sxdu: header\n  77   Kim Lee/demo\n")
    assert m.kib == 77
    assert m.unparsed == ["sxdu: header"]
    assert parse_sxdu("").kib is None


def test_service_status_captured_shape_and_variations() -> None:
    text = (
        "Service Name                State     Date\n"
        "Request Server              Started   10.03.08   3\n"
        "IMAP Server                 Enabled   03/10/08\n"
        "POP3 Interface              Stopped   10.03.08\n"
        "Remote Client Interface     DISABLED  Mar-10-2008 12:00\n"
        "\n"
    )
    s = parse_service_status(text)
    assert [(x.name, x.state) for x in s.services] == [
        ("Request Server", "Started"),
        ("IMAP Server", "Enabled"),
        ("POP3 Interface", "Stopped"),
        ("Remote Client Interface", "Disabled"),
    ]
    assert s.services[0].subprocesses == 3
    assert s.services[3].since == "Mar-10-2008 12:00"
    assert [x.name for x in s.down()] == ["POP3 Interface", "Remote Client Interface"]
    assert s.unparsed == ["Service Name                State     Date"]


def test_sessions() -> None:
    text = "kim  IMAP client  127.0.0.1\nbob SWA Client 10.0.0.2\nsomething else\n"
    s = parse_sessions(text)
    assert [x.client for x in s.sessions] == ["IMAP", "SWA"]
    assert s.sessions[0].mentions("Kim")
    assert not s.sessions[1].mentions("kim", None)
    assert s.unparsed == ["something else"]


def test_mailnodes() -> None:
    m = parse_mailnodes("**      scalix,demo\n        scalix,training\n")
    assert m.mailnodes == ["scalix,demo", "scalix,training"]
    assert m.primary == "scalix,demo"
    assert parse_mailnodes("two words here\n").unparsed == ["two words here"]
