"""Files only the migrating account can read: 0700 directories, 0600 files, any umask.

The journal, the staging store and the reports hold addresses, folder names, Message-IDs and
whole messages. ``mkdir(mode=...)`` and ``open()`` are filtered by the process umask (0022 makes
0755/0644), so the modes are set explicitly after creating. Only what this tool creates is
changed: a directory the operator made beforehand keeps the mode they gave it.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents as 0700 directories; return ``path``."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            os.mkdir(p, DIR_MODE)
        except FileExistsError:
            continue  # another worker made it meanwhile; its mode is the same as ours
        os.chmod(p, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as a 0600 file when it does not exist (SQLite then keeps the
    mode for its -wal and -shm files); return ``path``."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` as a 0600 file, replacing what was there."""
    private_dir(path.parent)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file of an older version may be 0644
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(raw)
    finally:
        os.close(fd)


def private_prefect_home() -> Path:
    """The Prefect home (``PREFECT_HOME``, else ``~/.prefect``), created 0700 when it does not
    exist yet: the local server's database there holds run parameters, logs and artifacts.
    Called before Prefect first touches it; an existing home keeps its mode."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    return private_dir(home)
