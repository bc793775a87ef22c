"""Controlling running work: shutdown requests, and interrupting a task where it runs.

How a time limit (or ``revoke(terminate=True)``) reaches a running task depends on the
pool: the solo pool and prefork children run tasks on their main thread, which a Unix
signal interrupts even inside ``time.sleep``, a socket read or a lock wait
(:class:`SignalInterrupter`); the threads pool raises the exception in the task's thread
at its next bytecode (:func:`interrupt_thread`; a blocking call returns first); the
gevent and eventlet pools throw it into the task's greenlet (``worker/green.py``).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

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


#: Raises an exception type in the thread (or greenlet) running one task.
Interrupt = Callable[[type[BaseException]], object]


@dataclass
class Running:
    """A task running on one of the consumer's threads, and its time limits."""

    thread_id: int
    task: Any
    started: float
    soft_at: Optional[float]
    hard_at: Optional[float]
    interrupt: Interrupt
    signalled: set[str] = field(default_factory=set)


def thread_interrupter() -> Interrupt:
    """An :data:`Interrupt` for the calling thread (see :func:`interrupt_thread`)."""
    thread_id = threading.get_ident()
    return lambda exc_type: interrupt_thread(thread_id, exc_type)


#: The signal that carries a time limit to the main thread (POSIX only).
LIMIT_SIGNAL: Optional[int] = getattr(signal, "SIGUSR2", None)


def can_signal_main_thread() -> bool:
    """True where a running task on the main thread can be interrupted by a signal."""
    return (
        LIMIT_SIGNAL is not None
        and sys.platform != "win32"
        and hasattr(signal, "pthread_kill")
        and threading.current_thread() is threading.main_thread()
    )


class SignalInterrupter:
    """Raises exceptions in the main thread with a signal, so that they interrupt
    blocking calls (``time.sleep``, socket reads, lock waits) and not only bytecode.

    Installed by a consumer that runs tasks on the main thread; armed only while a task
    runs, so a late signal never raises in the worker's own code. The handler reads
    plain attributes (no lock: it runs on the thread a lock holder may be).
    """

    def __init__(self) -> None:
        assert LIMIT_SIGNAL is not None
        self.signum = LIMIT_SIGNAL
        self.armed = False
        self.pending: Optional[type[BaseException]] = None
        signal.signal(self.signum, self._handle)

    def arm(self) -> Interrupt:
        """Called on the main thread as a task starts; returns its :data:`Interrupt`."""
        self.pending = None
        self.armed = True
        return self.interrupt

    def disarm(self) -> None:
        self.armed = False
        self.pending = None

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        if not self.armed:
            return False
        self.pending = exc_type
        main = threading.main_thread().ident
        assert main is not None
        signal.pthread_kill(main, self.signum)
        return True

    def _handle(self, _signum: int, _frame: Any) -> None:
        exc_type, self.pending = self.pending, None
        if exc_type is not None and self.armed:
            raise exc_type()


def interrupt_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` inside another thread at its next bytecode (no Unix signals,
    so it works on Windows too). Does not interrupt a blocking C call."""
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
    return bool(changed == 1)


def enforce_time_limits(
    message_id: str, entry: Running, now: float, grace: float = HARD_LIMIT_GRACE
) -> bool:
    """Raise the soft, then the hard time limit in the task's thread when due; True when
    the task still runs ``grace`` seconds past its hard limit (it must be abandoned)."""
    if entry.soft_at is not None and now >= entry.soft_at and "soft" not in entry.signalled:
        entry.signalled.add("soft")
        logger.warning("Task %s[%s] hit its soft time limit", entry.task.name, message_id)
        entry.interrupt(SoftTimeLimitExceeded)
    if entry.hard_at is None or now < entry.hard_at:
        return False
    if "hard" not in entry.signalled:
        entry.signalled.add("hard")
        logger.error("Task %s[%s] hit its time limit", entry.task.name, message_id)
        entry.interrupt(TimeLimitExceeded)
    return now >= entry.hard_at + grace
