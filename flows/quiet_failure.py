"""A designed Failed outcome is not an engine crash: keep its traceback off the worker.

The flow returns ``Failed(message=…)`` when users failed or were left out by preflight
(prefect.md §1.4). In a worker's flow-run process, Prefect's engine then retrieves the run's
result, gets ``FailedRun`` (a failed state that carries a message, not an exception) and logs
"Engine execution exited with unexpected exception" with a traceback, although the state is
exactly what the flow meant. This filter drops that one record when its exception is
``FailedRun`` and nothing else: a real exception (a bug, a crash) is logged as before, and the
run's final state and message are logged by Prefect anyway ("Finished in state Failed(…)").
"""

from __future__ import annotations

import logging

from prefect.exceptions import FailedRun

ENGINE_MESSAGE = "Engine execution exited with unexpected exception"
FLOW_RUN_LOGGER = "prefect.flow_runs"


class DesignedFailureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != ENGINE_MESSAGE or not record.exc_info:
            return True
        return not isinstance(record.exc_info[1], FailedRun)


def quiet_designed_failures() -> None:
    """Install the filter on Prefect's flow-run logger once per process."""
    logger = logging.getLogger(FLOW_RUN_LOGGER)
    if not any(isinstance(f, DesignedFailureFilter) for f in logger.filters):
        logger.addFilter(DesignedFailureFilter())
