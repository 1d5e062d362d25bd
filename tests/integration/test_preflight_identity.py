"""Preflight on the bed logs in as extract and load do: what it passes, they can migrate."""

from __future__ import annotations

import shlex
import sys
import uuid
from pathlib import Path

import pytest

from scalix_migrate.extract import extract_user
from scalix_migrate.preflight import folder_findings
from scalix_migrate.preflight_destination import imap_destination_findings
from scalix_migrate.records import ScalixUser
from scalix_migrate.sandbox.directory import DirectoryUser, FolderSpec
from scalix_migrate.state import Journal
from tests.integration.scalix_bed import TenantSlice, bed, config, new_user
from tests.integration.test_preflight import dest_for

__all__ = ["bed"]


def _record(u: DirectoryUser) -> ScalixUser:
    return ScalixUser(
        display_name=u.display_name,
        mailnode=u.mailnode,
        auth_id=u.auth_id,
        addresses=tuple(u.addresses),
        has_message_store=True,
    )


def test_a_non_ascii_login_that_extract_uses_passes_preflight(
    bed: TenantSlice, tmp_path: Path
) -> None:
    """``login_identity: display_name`` with umlauts: sent as a literal by both."""
    name = f"Jörg Ünger {uuid.uuid4().hex[:6]}"
    user = _record(new_user(bed, "joerg", display_name=name, folders=[FolderSpec("Projekte")]))
    cfg = config(bed, tmp_path, source={"imap": {"login_identity": "display_name"}})
    assert folder_findings(cfg, [user]) == []
    with Journal.open(directory=tmp_path / "state") as journal:
        extract_user(cfg, journal, user)  # raises if the mboxadmin login is refused


@pytest.mark.parametrize("argument", ["'token for {email}'", """'{"sub": "{email}"}'"""])
def test_token_command_with_a_quoted_argument_and_json_braces(
    bed: TenantSlice, tmp_path: Path, argument: str
) -> None:
    """Preflight runs the token command as the load does (shlex, only placeholders filled)."""
    out = tmp_path / "argv.txt"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2]); print('t')"
    command = f"{sys.executable} -c {shlex.quote(script)} {out} {argument}"
    user = _record(new_user(bed, "oauth"))
    dest = {**dest_for(bed), "auth": "xoauth2", "token_command": command}
    dest.pop("password")
    cfg = config(bed, tmp_path, destination=dest)
    assert cfg.destination.type == "imap"
    found = imap_destination_findings(cfg.destination, cfg, user)
    want = shlex.split(argument)[0].replace("{email}", str(user.primary_address))
    assert out.read_text() == want
    # The bed's Dovecot has no XOAUTH2: the token was sent and refused, a login finding.
    assert [f.code for f in found] == ["PF-DST-006", "PF-DST-002"]
    assert "token_command" in found[1].remedy


def test_a_non_ascii_destination_password_is_a_finding_not_an_exception(
    bed: TenantSlice, tmp_path: Path
) -> None:
    user = _record(new_user(bed, "umlaut"))
    cfg = config(bed, tmp_path, destination={**dest_for(bed), "password": "pässwört"})
    assert cfg.destination.type == "imap"
    found = imap_destination_findings(cfg.destination, cfg, user)
    refused = [f for f in found if f.code == "PF-DST-002"]
    assert len(refused) == 1, found
    assert refused[0].user == user.key
    assert "destination.password" in refused[0].remedy
    assert "source." not in refused[0].remedy
