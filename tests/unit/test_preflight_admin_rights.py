"""Admin rights as a Scalix stand-in no one here wrote prints them (issue 11, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalix_migrate.config import parse_config
from scalix_migrate.discovery import Discovery
from scalix_migrate.errors import ConfigError
from scalix_migrate.preflight import Severity, accept_findings, admin_findings, finding
from scalix_migrate.scalix.parsers import UserListEntry, parse_user_details

# omshowu -n ADMIN -f on that stand-in: a class, a capability list, no full-admin line.
FOREIGN_ADMIN = """\
User Name : sxadmin/mail1/CN=sxadmin
Mail Account : Unlocked
Authentication ID : sxadmin@acme.test
Internet Address : sxadmin@acme.test
User Class : Limited
Admin Capabilities : admin, mboxadmin
"""


def _config_text(extra: str = "") -> str:
    return (
        "tenant: acme\n"
        "source:\n"
        "  server: scalix.acme.test\n"
        "  server_names: [mail1]\n"
        "  admin_user: sxadmin\n"
        "  admin_password: ${X}\n"
        "  test_user: kim@acme.test\n"
        "destination:\n  type: maildir\n  path: '/tmp/x/{email}'\n" + extra
    )


def _discovery(text: str) -> Discovery:
    entry = UserListEntry("sxadmin", "mail1", "sxadmin/mail1/CN=sxadmin")
    admin = parse_user_details(entry, text).user
    return Discovery(users=[admin], all_users=[admin])


def test_admin_capability_in_the_list_counts_as_full_administrator() -> None:
    cfg = parse_config(_config_text())
    found = admin_findings(cfg, _discovery(FOREIGN_ADMIN), mailbox_opened=True)
    assert found == []


def test_unknown_full_admin_is_a_warning_with_its_evidence_never_a_block() -> None:
    cfg = parse_config(_config_text())
    text = FOREIGN_ADMIN.replace("admin, mboxadmin", "mboxadmin")
    [f] = admin_findings(cfg, _discovery(text), mailbox_opened=True)
    assert f.code == "PF-ADM-004"
    assert f.severity is Severity.warning
    assert "listed 1 user(s)" in f.message
    assert "opened read-only through the mboxadmin login" in f.message


def test_mboxadmin_not_listed_but_proven_by_the_login_is_a_warning() -> None:
    cfg = parse_config(_config_text())
    text = FOREIGN_ADMIN.replace("admin, mboxadmin", "admin")
    [f] = admin_findings(cfg, _discovery(text), mailbox_opened=True)
    assert (f.code, f.severity) == ("PF-ADM-005", Severity.warning)
    [g] = admin_findings(cfg, _discovery(text), mailbox_opened=False)
    assert (g.code, g.severity) == ("PF-ADM-003", Severity.blocking)


def test_explicit_no_still_blocks_until_accepted() -> None:
    cfg = parse_config(_config_text("preflight:\n  accept: [PF-ADM-002]\n"))
    text = FOREIGN_ADMIN + "Full Administrator : No\n"
    [f] = admin_findings(cfg, _discovery(text), mailbox_opened=True)
    assert (f.code, f.severity, f.accepted) == ("PF-ADM-002", Severity.blocking, False)
    [a] = accept_findings([f], cfg.preflight.accept)
    assert a.accepted
    assert not a.counts


def test_accept_for_one_user_leaves_the_others() -> None:
    mine = finding("PF-USR-005", "folder 'a\\b'", user="kim@acme.test")
    other = finding("PF-USR-005", "folder 'c\\d'", user="lars@acme.test")
    out = accept_findings([mine, other], ["PF-USR-005:Kim@acme.test"])
    assert [f.accepted for f in out] == [True, False]


def test_accept_of_an_unknown_code_names_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(_config_text("preflight:\n  accept: [PF-ADM-999]\n"), encoding="utf-8")
    from scalix_migrate.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith(f"{path}:12 preflight.accept.0: expected a")
    assert "scalix-migrate codes" in info.value.problems[0]
