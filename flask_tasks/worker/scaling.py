"""How big a worker is: ``--autoscale MAX,MIN`` and ``--max-memory-per-child KiB``.

The threads pool scales in its monitor thread (``worker/monitor.py``); the prefork
supervisor scales its children from the load each child reports in a shared array
(:class:`LoadBoard`). Memory is the resident set size of the process, read after each
task.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

#: Seconds a surplus thread or child stays idle before autoscaling retires it.
AUTOSCALE_KEEPALIVE = float(os.environ.get("FLASK_TASKS_AUTOSCALE_KEEPALIVE", "3"))

#: What a prefork child reports of itself in its :class:`LoadBoard` slot.
IDLE, BUSY, BUSY_WITH_BACKLOG = 0, 1, 2


def parse_autoscale(value: str) -> tuple[int, int]:
    """``(maximum, minimum)`` from ``"MAX,MIN"`` (or ``"MAX"``: minimum 1). Raises
    ValueError with what is wrong."""
    parts = [part.strip() for part in value.split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers.append(1)
    if len(numbers) != 2 or not 1 <= numbers[1] <= numbers[0]:
        raise ValueError(
            f"--autoscale {value!r} must be MAX,MIN with 1 <= MIN <= MAX, such as 10,2"
        )
    return numbers[0], numbers[1]


def rss_kib() -> Optional[int]:
    """The resident memory of this process in KiB (None where it cannot be read)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)  # bytes on macOS


class LoadBoard:
    """One slot per prefork child, shared across processes: IDLE, BUSY or
    BUSY_WITH_BACKLOG, written by the child, read by the supervisor."""

    def __init__(self, context: Any, slots: int) -> None:
        self.slots = context.Array("b", slots, lock=False)

    def set(self, slot: int, state: int) -> None:
        self.slots[slot] = state

    def get(self, slot: int) -> int:
        return int(self.slots[slot])
