"""Extract and load of one user at the same time: the destination is written while the
source is still being read.

The extract runs in the calling thread and stages batch after batch as it always does
(staging store + journal, one transaction per batch); the load runs in one worker thread and
follows it through a :class:`~scalix_migrate.feed.LoadFeed`, appending each recorded batch
from the journal. Nothing else changes: the journal is still the only hand-over, so the
two-phase ledger, the reconciliation after a crash and the rerun behave exactly as when the
load runs after the extract. A crash at any point leaves what either step had committed.

Outcomes: when the extract fails, the load finishes what was staged and the extract's error
is raised (the user failed; a rerun resumes both from the journal). When the load fails,
the extract stops at its next batch and the load's error is raised. A load stopped by the
daily byte budget does not stop the extract: the rest stays staged for the next run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime

from scalix_migrate.config import Phase, TenantConfig
from scalix_migrate.destinations.base import Destination
from scalix_migrate.extract import ExtractResult, MailboxFactory, extract_user
from scalix_migrate.feed import LoadFeed, LoadStopped
from scalix_migrate.load import LoadResult, load_user
from scalix_migrate.records import ScalixUser
from scalix_migrate.state import Journal
from scalix_migrate.user_context import open_destination, open_source


@dataclass(frozen=True)
class TransferResult:
    extract: ExtractResult
    load: LoadResult
    extract_finished: datetime  # the load goes on a little longer, with the last batch


def transfer_user(
    cfg: TenantConfig,
    journal: Journal,
    user: ScalixUser,
    *,
    phase: Phase = Phase.full,
    mailbox: MailboxFactory = open_source,
    destination: Callable[[TenantConfig, ScalixUser], Destination] = open_destination,
    check_folder_names: bool = False,
) -> TransferResult:
    """Extract ``user`` and load what it stages while it runs (see the module docstring).
    ``check_folder_names``: see :func:`~scalix_migrate.extract.extract_user`."""
    feed = LoadFeed()
    loaded: Future[LoadResult] = Future()

    def run_load() -> None:
        try:
            loaded.set_result(load_user(cfg, journal, user, destination=destination, feed=feed))
        except BaseException as exc:  # handed to the calling thread below
            loaded.set_exception(exc)

    loader = threading.Thread(target=run_load, name=f"load-{user.key}", daemon=True)
    loader.start()
    try:
        extracted = extract_user(
            cfg, journal, user, phase=phase, mailbox=mailbox, feed=feed,
            check_folder_names=check_folder_names,
        )  # fmt: skip
    except LoadStopped:
        feed.finish()
        loader.join()
        loaded.result()  # raises the load's error, the reason the extract stopped
        raise  # not reached: a feed is stopped only by a failed load
    except BaseException:
        feed.finish()
        loader.join()  # what was staged is appended; the extract's error is the user's
        raise
    extract_finished = datetime.now(UTC)
    feed.finish()
    loader.join()
    return TransferResult(extracted, loaded.result(), extract_finished)
