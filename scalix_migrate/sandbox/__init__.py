"""Scalix stand-ins: the directory model, admin-command emulation and the embedded sandbox.

``Sandbox`` is imported lazily: the admin-command emulators run as one short process per
command on the test bed, and must not pay for importing pymap and paramiko each time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scalix_migrate.sandbox.embedded import Sandbox

__all__ = ["Sandbox"]


def __getattr__(name: str) -> Any:
    if name == "Sandbox":
        from scalix_migrate.sandbox.embedded import Sandbox

        return Sandbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
