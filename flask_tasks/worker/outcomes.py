"""Outcomes of finished tasks not yet sent, in a solo consumer (and each prefork child).

They are batched while prefetched work waits, so that N tasks cost one acknowledging round
trip, and the batch left when none waits goes with the next reserve: one step where the
broker does both at once (SQLite: one transaction, one commit). An outcome's result
becomes visible when its batch is committed, acknowledgement and record together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..brokers import Delivery, Settlement
from ..exceptions import OperationalError

if TYPE_CHECKING:
    from .runner import TaskRunner

logger = logging.getLogger("flask_tasks.worker")

#: Outcomes batched while prefetched work waits: at most this many, this long (s).
_ACK_BATCH = 64
_ACK_DELAY = 0.02


class Outcomes:
    """The buffer of ``(message, record)`` settlements that a runner appends to."""

    def __init__(self, runner: TaskRunner) -> None:
        self.runner = runner
        self.buffer: list[Settlement] = []
        self._since = 0.0

    def _take(self) -> list[Settlement]:
        batch = list(self.buffer)
        self.buffer.clear()
        self._since = 0.0
        return batch

    def flush(self, force: bool) -> None:
        """Send buffered outcomes: when asked, when many, or when the oldest waited
        ``_ACK_DELAY`` (their results become visible then)."""
        if not self.buffer:
            return
        now = time.monotonic()
        if len(self.buffer) == 1 and not self._since:
            self._since = now
        if not force and len(self.buffer) < _ACK_BATCH and now - self._since < _ACK_DELAY:
            return
        batch = self._take()
        try:
            self.runner.settle(batch)
        except OperationalError as error:  # their leases bring them back: run again
            logger.error("Could not acknowledge %d finished task(s): %s", len(batch), error)

    def settle_and_reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        """Reserve up to ``count`` messages, settling the buffered outcomes in the same step.
        Raises OperationalError (logged when outcomes were lost with it: leases bring their
        messages back)."""
        batch = self._take()
        try:
            return self.runner.settle_and_reserve(batch, list(queues), count, lease)
        except OperationalError as error:
            if batch:
                logger.error("Could not acknowledge %d finished task(s): %s", len(batch), error)
            raise


__all__ = ["Outcomes"]
