"""Controlling running work: shutdown requests, and interrupting a task's thread."""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

logger = logging.getLogger("flask_tasks.worker")

#: Seconds a task may go on after its hard time limit was raised in it before it counts
#: as stuck (in C code that the exception cannot interrupt).
HARD_LIMIT_GRACE = 2.0


class Shutdown:
    """Shutdown requests: the first is warm (finish running tasks), the second cold."""

    def __init__(self, warm: Any = None, cold: Any = None) -> None:
        self.warm = warm if warm is not None else threading.Event()
        self.cold = cold if cold is not None else threading.Event()

    def request(self) -> str:
        if self.warm.is_set():
            self.cold.set()
            return "cold"
        self.warm.set()
        return "warm"


@dataclass
class Running:
    """A task running on one of the consumer's threads, and its time limits."""

    thread_id: int
    task: Any
    started: float
    soft_at: Optional[float]
    hard_at: Optional[float]
    signalled: set[str] = field(default_factory=set)


def interrupt_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` inside another thread at its next bytecode (no Unix signals,
    so it works on Windows too). Does not interrupt a blocking C call."""
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
    return bool(changed == 1)


def enforce_time_limits(message_id: str, entry: Running, now: float) -> bool:
    """Raise the soft, then the hard time limit in the task's thread when due; True when
    the task is stuck past its hard limit (its thread cannot be interrupted)."""
    if entry.soft_at is not None and now >= entry.soft_at and "soft" not in entry.signalled:
        entry.signalled.add("soft")
        logger.warning("Task %s[%s] hit its soft time limit", entry.task.name, message_id)
        interrupt_thread(entry.thread_id, SoftTimeLimitExceeded)
    if entry.hard_at is None or now < entry.hard_at:
        return False
    if "hard" not in entry.signalled:
        entry.signalled.add("hard")
        logger.error("Task %s[%s] hit its time limit", entry.task.name, message_id)
        interrupt_thread(entry.thread_id, TimeLimitExceeded)
        return False
    return now >= entry.hard_at + HARD_LIMIT_GRACE
