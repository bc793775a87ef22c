"""Rate limits shared by every worker: a fixed-window counter in the store.

``"10/s"`` lets ten runs start per one-second window across all workers; a message over
the limit goes back to the broker, delayed to the start of the next window (it is never
dropped). The counter is the store's atomic ``incr``, so no worker-local state decides.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..config_entries import parse_rate

if TYPE_CHECKING:
    from ..brokers import Store


class RateLimiter:
    """Decides, per run, whether a rate-limited task may start now."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.overrides: dict[str, Any] = {}

    def delay_for(self, task_name: str, rate: Any) -> float:
        """0 if the task may run now, else seconds until its next window."""
        parsed = parse_rate(self.overrides.get(task_name, rate))
        if parsed is None:
            return 0.0
        limit, period = parsed
        now = time.time()
        window = int(now // period)
        count = self.store.incr(f"rate:{task_name}:{window}", period * 2)
        if count <= limit:
            return 0.0
        return (window + 1) * period - now
