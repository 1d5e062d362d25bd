"""The hand-over between a running extract and the load that follows it (see transfer.py).

The extract tells the feed which folders it will read and each time it has recorded a batch
in the journal; the load waits on the feed and, each time, appends what the journal now
holds as ``staged``. The journal stays the only carrier of messages: the feed carries no
data, just "there is more" and "there will be no more". When the load fails, the next
``batch_recorded`` stops the extract with :class:`LoadStopped`, so a user whose destination
refuses it does not go on reading the whole mailbox.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from scalix_migrate.folders import SourceFolderInfo
from scalix_migrate.records import SourceFolder

#: How long the load waits for news before looking at the journal anyway (a safety net:
#: every batch and the end are signalled).
WAIT_S = 5.0


class LoadStopped(Exception):
    """Raised in the extract when the load that follows it has failed."""


class LoadFeed:
    """Thread-safe signals from one user's extract to its load."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._folders: list[SourceFolderInfo] | None = None
        self._version = 0
        self._done = False
        self._load_failed = False

    # --- the extract's side ---------------------------------------------------------------

    def folders_listed(self, folders: Sequence[SourceFolder]) -> None:
        """The folders this extract will read (after include/exclude), before any fetch."""
        infos = [SourceFolderInfo(f.name, f.special, f.folder_class) for f in folders]
        with self._cond:
            self._folders = infos
            self._cond.notify_all()

    def batch_recorded(self) -> None:
        """A batch is in the journal. Raises LoadStopped when the load has given up."""
        with self._cond:
            self._version += 1
            self._cond.notify_all()
            if self._load_failed:
                raise LoadStopped("the load of this user failed")

    def finish(self) -> None:
        """The extract has ended (done or failed): nothing more will be staged."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    # --- the load's side ------------------------------------------------------------------

    def listed_folders(self) -> list[SourceFolderInfo]:
        """The extract's folders, once it has listed them (none when it ended before)."""
        with self._cond:
            while self._folders is None and not self._done:
                self._cond.wait(WAIT_S)
            return list(self._folders or [])

    def wait_for_more(self, seen: int) -> tuple[int, bool]:
        """Block until a batch newer than ``seen`` is recorded or the extract ended;
        returns (the newest batch number, whether the extract has ended)."""
        with self._cond:
            if self._version == seen and not self._done:
                self._cond.wait(WAIT_S)
            return self._version, self._done

    def load_failed(self) -> None:
        with self._cond:
            self._load_failed = True
            self._cond.notify_all()
