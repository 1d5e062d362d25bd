"""Fresh, uniquely named users on the shared test bed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from scalix_migrate.records import ScalixUser
from scalix_migrate.sandbox.directory import DirectoryUser, FolderSpec


def add_test_user(
    testbed: Any, tag: str, folders: Sequence[str], *, display: str = "Test"
) -> tuple[ScalixUser, str]:
    """Add ``<display> <tag>`` (auth id ``tag``, address ``tag@example.test``) with exactly
    ``folders`` on the test bed's first mailnode; return its record and its address."""
    mailnode = testbed.directory().mailnodes[0]
    address = f"{tag}@example.test"
    testbed.add_user(
        DirectoryUser(
            display_name=f"{display} {tag}",
            mailnode=mailnode,
            auth_id=tag,
            addresses=[address],
            password=uuid.uuid4().hex,
            folders=[FolderSpec(name) for name in folders],
        )
    )
    user = ScalixUser(
        display_name=f"{display} {tag}",
        mailnode=mailnode,
        auth_id=tag,
        addresses=(address,),
        has_message_store=True,
    )
    return user, address
