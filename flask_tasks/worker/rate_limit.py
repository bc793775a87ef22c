"""Rate limits shared by every worker: a fixed-window counter in the store.

``"10/s"`` lets ten runs start per one-second window across all workers; a message over
the limit goes back to the broker, delayed to the start of the next window (it is never
dropped). The counter is the store's atomic ``incr``, so no worker-local state decides.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional, Union

if TYPE_CHECKING:
    from ..brokers import Store

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: Union[str, int, float, None]) -> Optional[tuple[float, float]]:
    """``(limit, period_seconds)`` for ``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number
    per second; None for no limit. Raises ValueError naming the bad rate."""
    if rate is None or rate == 0 or rate == "":
        return None
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        return (float(rate), 1.0)
    if isinstance(rate, str):
        amount, _, unit = rate.strip().partition("/")
        try:
            limit = float(amount)
        except ValueError:
            limit = -1.0
        period = _PERIODS.get(unit.strip()[:1] or "s")
        if limit >= 0 and period is not None:
            return (limit, period) if limit else None
    raise ValueError(f"rate_limit {rate!r} is not a rate like '10/s', '100/m' or '1000/h'")


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
