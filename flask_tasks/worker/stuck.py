"""Tasks stuck in C code past their hard time limit: what the consumer does with them.

An exception raised into a thread cannot interrupt a blocking C call. Past its grace the
task is recorded as failed and its message settled, so its lease is neither renewed nor
waited for: a solo or prefork child then exits (its parent starts another); a thread of
the ``threads`` pool is abandoned, and a shutdown no longer waits for it. Whatever the
thread does afterwards is refused by fencing (its lease token is stale).
"""

from __future__ import annotations

import logging
import os

from ..brokers import Delivery
from ..exceptions import OperationalError, TimeLimitExceeded
from ..records import Record
from .control import Running
from .logs import loggable
from .runner import TaskRunner

logger = logging.getLogger("flask_tasks.worker")


def abandon_stuck(runner: TaskRunner, held: Delivery, entry: Running, exit_process: bool) -> None:
    """Record the failure of a stuck task and settle its message; end this process when
    ``exit_process``, else leave its thread behind."""
    name, message_id = entry.task.name, loggable(held.id)
    what = "was killed" if exit_process else "did not stop; its thread was abandoned"
    error = TimeLimitExceeded(f"{name} exceeded its time limit and {what}")
    try:
        runner.settle_now(held, Record.failure(error, name))
    except OperationalError as failure:  # its lease, no longer renewed, brings it back
        logger.error("Could not settle stuck task %s[%s]: %s", name, message_id, failure)
    if exit_process:
        logger.error("Task %s[%s] did not stop; exiting this process", name, message_id)
        os._exit(1)
    logger.error("Task %s[%s] did not stop; abandoning its thread", name, message_id)
