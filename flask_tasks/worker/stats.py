"""What a worker process counts about the tasks it finished, for the dashboard and metrics.

Kept in memory and sent with the worker's heartbeat (``Store.heartbeat``, every few
seconds): counting a task costs a lock and a few dict updates, no round trip. The
figures live as long as the worker process: a restarted worker starts from zero, which
Prometheus treats as a counter reset, and the dashboard's chart shows what the live
workers saw in the last hour.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Optional

from .. import states

#: Upper bounds (seconds) of the run-time histogram buckets; one more bucket counts the rest.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Minutes of per-minute figures kept (the dashboard's chart covers the last hour).
MINUTES = 60
#: Recent failures kept per worker process.
RECENT_FAILURES = 20


class TaskStats:
    """Counts by task and state, run-time histograms by task, per-minute throughput and
    run time for the last hour, and the latest failures. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, dict[str, int]] = {}
        self._histograms: dict[str, list[float]] = {}  # bucket counts..., +Inf count, sum
        self._minutes: dict[int, list[float]] = {}  # minute -> [succeeded, failed, seconds]
        self._failures: deque[dict[str, Any]] = deque(maxlen=RECENT_FAILURES)

    def record(
        self,
        task: str,
        state: str,
        seconds: Optional[float],
        task_id: str = "",
        error: str = "",
    ) -> None:
        """Count one finished run of ``task`` (``seconds`` None: it did not run)."""
        now = time.time()
        minute = int(now // 60)
        with self._lock:
            by_state = self._totals.setdefault(task, {})
            by_state[state] = by_state.get(state, 0) + 1
            if seconds is not None:
                histogram = self._histograms.get(task)
                if histogram is None:
                    histogram = self._histograms[task] = [0.0] * (len(BUCKETS) + 2)
                histogram[_bucket(seconds)] += 1
                histogram[-1] += seconds
            if state != states.RETRY:
                slot = self._minutes.get(minute)
                if slot is None:
                    slot = self._minutes[minute] = [0, 0, 0.0]
                    for old in [m for m in self._minutes if m <= minute - MINUTES]:
                        del self._minutes[old]
                slot[0 if state == states.SUCCESS else 1] += 1
                slot[2] += seconds or 0.0
            if state == states.FAILURE:
                self._failures.append({"id": task_id, "task": task, "error": error, "at": now})

    def snapshot(self) -> dict[str, Any]:
        """The figures as JSON-ready data, sent with the heartbeat."""
        oldest = int(time.time() // 60) - MINUTES
        with self._lock:
            return {
                "totals": {task: dict(counts) for task, counts in self._totals.items()},
                "runtime": {task: list(values) for task, values in self._histograms.items()},
                "minutes": [
                    [minute, *values]
                    for minute, values in sorted(self._minutes.items())
                    if minute > oldest
                ],
                "failures": list(self._failures),
            }


def _bucket(seconds: float) -> int:
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS)


__all__ = ["BUCKETS", "MINUTES", "TaskStats"]
