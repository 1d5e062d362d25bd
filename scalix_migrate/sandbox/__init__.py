"""Scalix stand-ins: the directory model, admin-command emulation and the embedded sandbox."""

from scalix_migrate.sandbox.embedded import Sandbox

__all__ = ["Sandbox"]
