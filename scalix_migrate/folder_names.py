"""Folder names Scalix cannot hand over as they are: ``/`` or ``\\`` inside a name.

``\\`` is visible as such. ``/`` is Scalix's separator, so a name containing it shows up
split into levels; Scalix folders are all selectable except the namespace roots, so a
``\\NoSelect`` level with children is a name that contains ``/``. Copied as listed, such a
folder would arrive as nested folders. Preflight reports each as ``PF-USR-005`` (the user is
left out until the folder is renamed); a user's transfer reads the same listing and refuses
it too (``SXM-USR-004``), so a folder created after the user's earlier run is caught
without preflight logging in to every finished user again.
"""

from __future__ import annotations

from collections.abc import Sequence

from scalix_migrate.records import SourceFolder

NAMESPACE_ROOTS = {"other users", "public folders"}
FINDING_CODE = "PF-USR-005"


def bad_folder_names(listing: Sequence[SourceFolder]) -> list[str]:
    """One sentence per folder of ``listing`` whose name contains ``/`` or ``\\``."""
    out = []
    names = {f.name for f in listing}
    for folder in listing:
        name = folder.name
        if "\\" in name:
            out.append(f"folder {name!r} contains '\\'")
        elif (
            not folder.selectable
            and name.lower() not in NAMESPACE_ROOTS
            and any(n.startswith(name + "/") for n in names)
        ):
            children = sorted(n for n in names if n.startswith(name + "/"))
            out.append(
                f"folder {children[0]!r} looks like one folder whose name contains '/' "
                f"({name!r} is not a folder of its own)"
            )
    return out


def accepted(code: str, user_key: str, accept: Sequence[str]) -> bool:
    """Whether ``preflight.accept`` (``CODE`` or ``CODE:user``) accepts ``code`` for the user."""
    for entry in accept:
        listed, _, user = entry.partition(":")
        if listed.strip().upper() == code and (
            not user or user.strip().lower() == user_key.lower()
        ):
            return True
    return False
