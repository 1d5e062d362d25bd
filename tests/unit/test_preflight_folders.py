"""Preflight's folder-name check over many users: users at once, in order, each on its own."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate import ratelimit
from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import UserError
from scalix_migrate.preflight import folder_findings
from scalix_migrate.records import ScalixUser, SourceFolder
from scalix_migrate.user_context import UserContext


def _cfg(tmp_path: Path, users_at_once: int) -> TenantConfig:
    return TenantConfig.model_validate(
        {
            "tenant": "acme",
            "allow_inline_secrets": True,
            "source": {
                "server": f"folders-{users_at_once}.example.test",
                "server_names": ["sales"],
                "admin_user": "sxadmin",
                "admin_password": "pw",
                "test_user": "u0@example.test",
            },
            "destination": {"type": "maildir", "path": str(tmp_path / "out" / "{email}")},
            "options": {
                "staging_dir": str(tmp_path / "staging"),
                "concurrency": {"users": users_at_once, "connects_per_second": 10},
            },
        }
    )


def _folder(name: str) -> SourceFolder:
    return SourceFolder(name=name, raw_name=name, delimiter="/", attributes=frozenset())


class _Mailbox:
    """A source whose LIST takes a while; counts how many are open at once."""

    open_now = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, user: ScalixUser) -> None:
        self.user = user

    def __enter__(self) -> _Mailbox:
        if self.user.key.startswith("broken"):
            raise UserError("login refused", code="SXM-IMAP-002", user=self.user.key)
        with self.lock:
            _Mailbox.open_now += 1
            _Mailbox.most = max(_Mailbox.most, _Mailbox.open_now)
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            _Mailbox.open_now -= 1

    def list_folders(self) -> list[SourceFolder]:
        time.sleep(0.3)  # longer than the 0.1 s between two connects at 10 a second
        if self.user.key.startswith("bad"):
            return [_folder("INBOX"), _folder("a\\b")]
        return [_folder("INBOX")]


@pytest.mark.parametrize("users_at_once", [1, 3])
def test_the_folder_check_runs_users_at_once_and_reports_in_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, users_at_once: int
) -> None:
    monkeypatch.setattr(ratelimit, "_registry", {})
    monkeypatch.setattr(_Mailbox, "most", 0)

    def open_source(self: UserContext) -> Any:
        return _Mailbox(self.user)

    monkeypatch.setattr(UserContext, "open_source", open_source)
    names = ["u1", "bad2", "u3", "broken4", "u5", "bad6", "u7", "u8"]
    users = [
        ScalixUser(display_name=n, mailnode="sales", addresses=(f"{n}@example.test",))
        for n in names
    ]
    found = folder_findings(_cfg(tmp_path, users_at_once), users)

    assert [(f.code, f.user) for f in found] == [
        ("PF-USR-005", "bad2@example.test"),
        ("PF-USR-006", "broken4@example.test"),
        ("PF-USR-005", "bad6@example.test"),
    ]
    assert _Mailbox.most == users_at_once  # never more logins at once than users at once
