"""Source folders -> destination folder names.

The plan for one user is made in this order (every step that changes a name is reported in
:attr:`FolderPlan.notes`):

1. **Selection.** ``options.folders.include``/``exclude`` (names or fnmatch patterns on the
   ``/``-separated source name; a pattern also matches the folder's subfolders). Excluded
   folders are neither created nor loaded.
2. **Special folders**, by the journal's ``special`` (Scalix's ``\\X-SpecialFolder``), never by
   name: Inbox -> ``INBOX``; Sent/Deleted/Drafts/Junk -> the destination's SPECIAL-USE folder
   where advertised, else the preset's name (gmail ``[Gmail]/Sent Mail``, ``[Gmail]/Trash``,
   ``[Gmail]/Drafts``, ``[Gmail]/Spam``; m365 ``Sent Items``, ``Deleted Items``, ``Drafts``,
   ``Junk Email``; others ``Sent``, ``Trash``, ``Drafts``, ``Junk``). Subfolders of a special
   folder move with it. Calendar, Contacts, Tasks, Notes and Journal folders are loaded as mail
   folders under their own names (their ``.ics``/``.vcf`` export is a separate step).
3. **Renames**: ``options.folders.renames`` regexes, applied in order with ``re.sub`` to the
   ``/``-separated name produced by step 2.
4. **Names the destination cannot hold**, per path component:
   the destination's separator inside a component -> ``_``; an empty component -> ``_``;
   gmail: leading/trailing blanks trimmed, runs of blanks collapsed, ``^ ' " \\`` -> ``_``, a
   top-level ``[Gmail]`` -> ``[Gmail]_``; m365: a top-level ``Files`` -> ``Files (Scalix)``
   (reserved by Exchange).
5. **Collisions** (two sources onto one name; case-insensitively on m365): the later source,
   in name order, gets `` (2)``, `` (3)``… appended to its last component.
6. **Separator and prefix**: components joined with the destination separator, the personal
   namespace prefix put in front of everything but ``INBOX`` and its subfolders.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from scalix_migrate.config import TenantConfig
from scalix_migrate.destinations.base import Layout
from scalix_migrate.records import SpecialFolder

SPECIAL_USE = {
    SpecialFolder.sent: "\\Sent",
    SpecialFolder.deleted: "\\Trash",
    SpecialFolder.drafts: "\\Drafts",
    SpecialFolder.junk: "\\Junk",
}

PRESET_NAMES: dict[str, dict[SpecialFolder, str]] = {
    "gmail": {
        SpecialFolder.sent: "[Gmail]/Sent Mail",
        SpecialFolder.deleted: "[Gmail]/Trash",
        SpecialFolder.drafts: "[Gmail]/Drafts",
        SpecialFolder.junk: "[Gmail]/Spam",
    },
    "m365": {
        SpecialFolder.sent: "Sent Items",
        SpecialFolder.deleted: "Deleted Items",
        SpecialFolder.drafts: "Drafts",
        SpecialFolder.junk: "Junk Email",
    },
}
DEFAULT_NAMES = {
    SpecialFolder.sent: "Sent",
    SpecialFolder.deleted: "Trash",
    SpecialFolder.drafts: "Drafts",
    SpecialFolder.junk: "Junk",
}


@dataclass(frozen=True)
class SourceFolderInfo:
    """A source folder as the journal knows it."""

    name: str  # "/"-separated Unicode
    special: SpecialFolder | None = None
    folder_class: str | None = None


@dataclass(frozen=True)
class FolderPlan:
    source: str
    destination: str | None  # None when excluded
    notes: tuple[str, ...] = ()  # every rename, in words

    @property
    def excluded(self) -> bool:
        return self.destination is None


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(name, p) or name.startswith(p.rstrip("/") + "/") for p in patterns
    )


def _selected(cfg: TenantConfig, name: str) -> bool:
    opts = cfg.options.folders
    if opts.include and not _matches(name, opts.include):
        return False
    return not _matches(name, opts.exclude)


def special_target(special: SpecialFolder, layout: Layout) -> str | None:
    """The ``/``-separated destination name of a special folder, or None to keep the name."""
    if special is SpecialFolder.inbox:
        return "INBOX"
    if special not in SPECIAL_USE:
        return None
    advertised = layout.special_use.get(SPECIAL_USE[special])
    if advertised is not None:
        # Advertised names come in the destination's separator; the plan works in "/".
        name = advertised
        if layout.prefix and name.startswith(layout.prefix):
            name = name[len(layout.prefix) :]
        return "/".join(name.split(layout.separator)) if layout.separator != "/" else name
    return PRESET_NAMES.get(layout.preset, DEFAULT_NAMES)[special]


def _fix_component(comp: str, layout: Layout, depth: int, notes: list[str]) -> str:
    original = comp
    if layout.separator and layout.separator in comp:
        comp = comp.replace(layout.separator, "_")
    if layout.preset == "gmail":
        comp = re.sub(r"\s+", " ", comp).strip()
        comp = re.sub(r"[\^'\"\\]", "_", comp)
        if depth == 0 and comp == "[Gmail]":
            comp = "[Gmail]_"
    if layout.preset == "m365" and depth == 0 and comp.lower() == "files":
        comp = "Files (Scalix)"
    if not comp:
        comp = "_"
    if comp != original:
        notes.append(f"component {original!r} -> {comp!r}: the destination cannot hold it")
    return comp


def plan_folders(
    cfg: TenantConfig, sources: Sequence[SourceFolderInfo], layout: Layout
) -> list[FolderPlan]:
    """The destination name of each source folder, following the module docstring."""
    by_name = {s.name: s for s in sources}
    specials = {
        s.name: special_name
        for s in sources
        if s.special is not None and (special_name := special_target(s.special, layout)) is not None
    }
    plans: list[FolderPlan] = []
    taken: dict[str, str] = {}
    for name in sorted(by_name):
        notes: list[str] = []
        if not _selected(cfg, name):
            plans.append(FolderPlan(name, None, ("excluded by options.folders",)))
            continue
        logical = name
        target: str | None = None
        # The longest special ancestor (or the folder itself) decides where the subtree goes.
        for src in sorted(specials, key=len, reverse=True):
            if name == src or name.startswith(src + "/"):
                target = specials[src]
                logical = target + name[len(src) :]
                if logical != name:
                    notes.append(f"special folder: {name!r} -> {logical!r}")
                break
        if logical.split("/")[0].upper() == "INBOX":
            logical = "INBOX" + logical[5:]
        for rule in cfg.options.folders.renames:
            renamed = re.sub(rule.pattern, rule.replacement, logical)
            if renamed != logical:
                notes.append(f"rename {rule.pattern!r}: {logical!r} -> {renamed!r}")
                logical = renamed
        # The destination's own special names (e.g. "[Gmail]/Sent Mail") are held as they are.
        exempt = 0
        if target is not None and (logical == target or logical.startswith(target + "/")):
            exempt = len(target.split("/"))
        parts = [
            c if i < exempt else _fix_component(c, layout, i, notes)
            for i, c in enumerate(logical.split("/"))
        ]
        key = "/".join(parts)
        fold = key.lower() if layout.case_insensitive else key
        n = 2
        while fold in taken and taken[fold] != name:
            parts_n = [*parts[:-1], f"{parts[-1]} ({n})"]
            key = "/".join(parts_n)
            fold = key.lower() if layout.case_insensitive else key
            n += 1
        if n > 2:
            notes.append(f"{'/'.join(parts)!r} already taken: -> {key!r}")
            parts = key.split("/")
        taken[fold] = name
        plans.append(FolderPlan(name, to_destination(parts, layout), tuple(notes)))
    return plans


def to_destination(parts: Sequence[str], layout: Layout) -> str:
    """Join components with the destination separator and add the namespace prefix."""
    joined = layout.separator.join(parts)
    if parts[0] == "INBOX" or not layout.prefix:
        return joined
    return layout.prefix + joined
