"""Shared helpers for engineer C's integration tests (discovery, preflight, restart-service).

``bed`` is the real-server test bed (``testbed`` fixture from tests/conftest.py) when it is
defined, else the embedded :class:`Sandbox` (its SSH server is a real paramiko server over TCP
and speaks the same admin commands). Tests isolate themselves by adding uniquely named users.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.sandbox import Sandbox
from scalix_migrate.sandbox.directory import DirectoryUser


@pytest.fixture(scope="module")
def bed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        yield request.getfixturevalue("testbed")
        return
    except pytest.FixtureLookupError:
        pass
    with Sandbox(tmp_path_factory.mktemp("sandbox"), seed=False) as sb:
        yield sb


def is_sandbox(bed: Any) -> bool:
    return isinstance(bed, Sandbox)


def mailnode(bed: Any) -> str:
    return str(bed.directory().mailnodes[0])


def new_user(bed: Any, stem: str, **kw: Any) -> DirectoryUser:
    """Add a user with a unique name on the bed's first mailnode and return it."""
    tag = uuid.uuid4().hex[:6]
    local = f"{stem}-{tag}"
    values: dict[str, Any] = {
        "display_name": f"{stem.title()} {tag}",
        "mailnode": mailnode(bed),
        "auth_id": f"{local}@example.test",
        "addresses": [f"{local}@example.test"],
        "password": f"pw-{tag}",
        "mailbox_kib": 10,
    }
    values.update(kw)
    user = DirectoryUser(**values)
    bed.add_user(user)
    return user


def config(
    bed: Any,
    tmp_path: Path,
    *,
    destination: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    ssh: dict[str, Any] | None = None,
    **top: Any,
) -> TenantConfig:
    """A tenant config pointing at the bed, with nested overrides merged in."""
    destination = destination or {"type": "maildir", "path": str(tmp_path / "out" / "{email}")}
    if is_sandbox(bed):
        data = bed.config_data(destination)
    else:
        _, cfg = bed.make_config(tmp_path, destination=destination)
        data = cfg.model_dump(mode="json")
        data["allow_inline_secrets"] = True
    data["source"].update(source or {})
    data["source"]["ssh"].update(ssh or {})
    data["options"] = {**data.get("options", {}), **top.pop("options", {})}
    data.update(top)
    return TenantConfig.model_validate(data)
