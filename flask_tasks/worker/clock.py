"""The broker's clock as a worker sees it: this host's clock plus a measured offset.

Times another process set (a message's ``expires``) and the times a worker reports in its
heartbeats are judged by the server's clock where there is one (Redis ``TIME``), so that a
worker whose own clock is wrong neither drops a message as expired early nor reports a
time off by its error. The offset is measured again every :data:`REFRESH` seconds: one
round trip a minute, not one per task.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Optional

from ..exceptions import OperationalError

if TYPE_CHECKING:
    from ..runtime import Runtime

logger = logging.getLogger("flask_tasks.worker")

#: Seconds between measurements of the offset.
REFRESH = 60.0


class BrokerClock:
    """Unix time by the clock of the runtime's store (else its transport); this host's
    clock where neither keeps one of its own (SQLite and memory live on this machine)."""

    def __init__(self, runtime: Runtime, refresh: float = REFRESH) -> None:
        self.runtime = runtime
        self.refresh = refresh
        #: Seconds the server's clock is ahead of this host's (negative: behind).
        self.offset = 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        if time.monotonic() >= self._next:
            self._measure()
        return time.time() + self.offset

    def _measure(self) -> None:
        with self._lock:
            if time.monotonic() < self._next:
                return  # another thread just did
            self._next = time.monotonic() + self.refresh
            before = time.time()
            try:
                server = self._server_time()
            except OperationalError as error:  # keep the last offset; try again later
                logger.warning("Could not read the broker's clock: %s", error)
                return
            if server is None:
                self._next = float("inf")
                return
            self.offset = server - (before + time.time()) / 2

    def _server_time(self) -> Optional[float]:
        connections = self.runtime.connections
        server = connections.store.server_time()
        return server if server is not None else connections.transport.server_time()


__all__ = ["BrokerClock"]
