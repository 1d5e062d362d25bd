"""discover-users against the bed's real SSH server and admin-command emulators."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalix_migrate.discovery import discover_users
from scalix_migrate.errors import FatalError
from scalix_migrate.scalix.admin import ScalixAdmin
from tests.integration.scalix_bed import TenantSlice, add_mailnode, bed, config, new_user

__all__ = ["bed"]

EVIL = "o'brien; touch /tmp/pwned"


def test_discovers_details_in_order_and_only_configured_mailnodes(
    bed: TenantSlice, tmp_path: Path
) -> None:
    kim = new_user(
        bed,
        "kim",
        addresses=["kim-primary@example.test", "kim-alias@example.test"],
        user_class="Limited",
        locked=True,
        store_limit_kib=2048,
        mailbox_kib=777,
    )
    elsewhere = add_mailnode(bed.testbed, f"{bed.mailnode}-elsewhere")
    other = new_user(bed, "other", mailnode=elsewhere)
    nostore = new_user(bed, "nostore", has_message_store=False)
    cfg = config(bed, tmp_path)
    found = discover_users(cfg)
    by_name = {u.name: u for u in found.all_users}
    assert other.name not in by_name
    assert {u.mailnode for u in found.all_users} == {bed.mailnode}  # not the test bed's others
    u = by_name[kim.name]
    assert u.addresses == ("kim-primary@example.test", "kim-alias@example.test")
    assert u.auth_id == kim.auth_id
    assert u.user_class == "Limited"
    assert u.locked is True
    assert u.has_message_store is True
    assert u.mailbox_kib == 777
    assert u.store_limit_kib == 2048
    assert u.full_admin is False
    assert by_name[nostore.name].has_message_store is False
    assert by_name[nostore.name].mailbox_kib == 0
    admin = found.find(cfg.source.admin_user)
    assert admin is not None
    assert "mboxadmin" in admin.capabilities
    assert admin.full_admin is True
    assert found.unparsed == []
    assert found.failures == []


def test_include_exclude_by_address_name_and_pattern(bed: TenantSlice, tmp_path: Path) -> None:
    a = new_user(bed, "incl")
    b = new_user(bed, "incl")
    c = new_user(bed, "skip")
    cfg = config(
        bed,
        tmp_path,
        options={
            "users": {
                "include": ["incl-*@example.test", c.name, "nobody@x.test"],
                "exclude": [b.display_name],
            }
        },
    )
    found = discover_users(cfg)
    names = {u.name for u in found.users}
    assert a.name in names
    assert c.name in names
    assert b.name not in names
    assert found.unmatched_includes == ["nobody@x.test"]


def test_shell_metacharacters_in_a_name_are_only_a_name(bed: TenantSlice, tmp_path: Path) -> None:
    canary = Path("/tmp/pwned")
    canary.unlink(missing_ok=True)
    evil = new_user(bed, "evil", display_name=EVIL, addresses=["obrien@example.test"])
    found = discover_users(config(bed, tmp_path))
    u = next(u for u in found.users if u.display_name == EVIL)
    assert u.addresses == ("obrien@example.test",)
    assert u.mailbox_kib == evil.mailbox_kib
    assert not canary.exists()


def test_unknown_host_key_is_refused_with_its_fingerprint(bed: TenantSlice, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cfg = config(bed, tmp_path, ssh={"host_key_fingerprint": None, "known_hosts": str(empty)})
    with pytest.raises(FatalError) as err:
        ScalixAdmin(cfg).connect()
    assert err.value.code == "SXM-SSH-002"
    assert bed.host_key_fingerprint.rstrip("=") in err.value.describe()
    assert "host_key_fingerprint" in err.value.remedy


def test_changed_pinned_key_is_refused(bed: TenantSlice, tmp_path: Path) -> None:
    cfg = config(bed, tmp_path, ssh={"host_key_fingerprint": "SHA256:" + "A" * 43})
    with pytest.raises(FatalError) as err:
        ScalixAdmin(cfg).connect()
    assert err.value.code == "SXM-SSH-003"
    assert bed.host_key_fingerprint.rstrip("=") in err.value.describe()
