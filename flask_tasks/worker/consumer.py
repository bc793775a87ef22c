"""The consume loop of one worker process: reserve, run, heartbeat, shut down.

Every pool runs this loop. ``solo`` runs tasks on the loop's own thread; ``threads``
hands them to N threads; ``prefork`` runs one solo consumer in each child process.

A monitor thread (``worker/monitor.py``) renews the leases of held messages (so a task
may run longer than the visibility timeout while its worker lives), enforces time limits,
stops tasks revoked with ``terminate=True``, and turns shutdown requests from the parent
process into actions.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from .. import signals
from ..brokers import Delivery, ReadOnlyBroker
from ..exceptions import OperationalError
from .control import (
    Interrupt,
    Running,
    Shutdown,
    SignalInterrupter,
    can_signal_main_thread,
    thread_interrupter,
)
from .logs import loggable
from .monitor import Monitor
from .outcomes import Outcomes
from .runner import TaskRunner
from .scaling import rss_kib

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..task import Task

logger = logging.getLogger("flask_tasks.worker")

#: A prefetched message that waited longer than this is checked for revocation again
#: just before it starts (the check made when it was reserved may be stale by then).
_REVOKE_RECHECK_AFTER = 0.05
#: Longest single idle wait on the broker: bounds how long a stop request waits.
_IDLE_WAIT = 0.25
#: Prefetched messages go back to their queue when every slot has been busy this long (s).
STALL_RETURN = 0.2


class Consumer(Monitor):
    """Reserve messages from ``queues`` and run them on ``concurrency`` slots.

    ``pool`` names how tasks run, for time limits and heartbeats: ``solo`` (on the
    calling thread), ``threads``, ``prefork`` (a child: solo in its own process),
    ``gevent`` or ``eventlet`` (``threaded``, with threads that are greenlets).
    """

    def __init__(
        self,
        runtime: Runtime,
        queues: list[str],
        *,
        concurrency: int = 1,
        threaded: bool = False,
        prefetch: int = 4,
        hostname: str = "worker",
        shutdown: Shutdown | None = None,
        max_tasks: Optional[int] = None,
        burst: bool = False,
        exclusive_process: bool = False,
        parent_pid: Optional[int] = None,
        pool: Optional[str] = None,
        autoscale: Optional[tuple[int, int]] = None,
        max_memory_kib: Optional[int] = None,
        announce_ready: bool = True,
        on_load: Optional[Callable[[int, bool], None]] = None,
    ) -> None:
        self.runtime = runtime
        self.queues = queues
        self.threaded = threaded
        self.pool = pool or ("threads" if threaded else "solo")
        self.autoscale = autoscale if threaded else None
        #: Threads running tasks now (autoscaling changes it).
        self.concurrency = max(1, self.autoscale[1] if self.autoscale else concurrency)
        self.prefetch = max(0, prefetch)
        self.max_memory_kib = max_memory_kib
        #: Set when the process crossed ``max_memory_kib``: its runner restarts it.
        self.memory_exceeded = False
        #: Why the loop stopped on its own when retrying could not help (a read-only broker).
        self.fatal: Optional[ReadOnlyBroker] = None
        self.announce_ready = announce_ready
        #: Called each second with (tasks running, whether messages wait): prefork load.
        self.on_load = on_load
        self.hostname = hostname
        self.shutdown = shutdown or Shutdown()
        self.max_tasks = max_tasks
        self.burst = burst
        self.exclusive_process = exclusive_process
        self.parent_pid = parent_pid
        self.runner = TaskRunner(runtime, hostname)
        #: Outcomes of finished tasks not yet sent (solo consumers batch them).
        self._outcomes = Outcomes(self.runner)
        if not threaded:
            self.runner.settle_buffer = self._outcomes.buffer
        self.lease = float(runtime.config.visibility_timeout)
        self.tasks_done = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._held: dict[str, Delivery] = {}
        #: Reserved, not started: (delivery, revoked when reserved, monotonic reserve time).
        self._pending: deque[tuple[Delivery, bool, float]] = deque()
        self._running: dict[str, Running] = {}
        self._stalled = False
        #: The last reserve came back short: nothing was left ready then.
        self._drained = False
        self._stopped = threading.Event()
        #: Executor threads to stop (autoscaling down), and threads left to a task that
        #: passed its hard time limit.
        self._retire = 0
        self._abandoned_threads: set[int] = set()
        self._signals: Optional[SignalInterrupter] = None

    @property
    def capacity(self) -> int:
        """Messages held at most: one per running slot, plus the prefetch."""
        return self.concurrency + self.prefetch

    @property
    def transport(self) -> Any:
        return self.runtime.transport

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until shutdown (or, in burst mode, until the queues are empty)."""
        if self.exclusive_process and can_signal_main_thread():
            self._signals = SignalInterrupter()
        threading.Thread(target=self._monitor, name="flask-tasks-monitor", daemon=True).start()
        self.transport.consuming(True)
        if self.threaded:
            for _ in range(self.concurrency):
                self._start_executor()
        if self.announce_ready:
            logger.info("%s ready: consuming %s", self.hostname, ", ".join(self.queues))
        signals.worker_ready.send(self)
        try:
            self._consume()
        finally:
            self._flush_acks(force=True)
            self._return_pending()
            self._wait_for_running()
            if self.shutdown.cold.is_set():
                self._cold_exit()  # here too: the monitor may already have stopped
            self._stopped.set()
            self.transport.consuming(False)
            with self._changed:
                self._changed.notify_all()
            signals.worker_shutdown.send(self)

    def _consume(self) -> None:
        backoff = 0.0
        while not self.shutdown.warm.is_set():
            if not self.threaded and self._pending:
                with self._lock:  # the monitor may be giving pending messages back
                    reserved = self._pending.popleft() if self._pending else None
                if reserved is not None:
                    self._execute(*reserved)
                    # Once none is pending, the next reserve settles them (one step).
                    self._flush_acks(force=False)
                continue
            try:
                fetched = self._fetch()
                backoff = 0.0
            except ReadOnlyBroker as error:
                logger.critical("%s; stopping the worker", error)
                self.fatal = error
                return
            except OperationalError as error:
                backoff = min(max(backoff * 2, 0.5), 10.0)
                logger.error("Broker unreachable (%s); retrying in %.1fs", error, backoff)
                self.shutdown.warm.wait(backoff)
                continue
            if not fetched and self.burst and not self._held:
                return

    def _fetch(self) -> bool:
        """Reserve more work when there is room; wait when there is none. True if the
        loop has work in hand (or got some)."""
        with self._lock:
            room = self.capacity - len(self._held)
            pending = len(self._pending)
            # Refill in batches: one round trip for several messages; none while stalled
            # (slow tasks in every slot: others should take the work).
            full = room <= 0 or self._stalled or (pending and room < max(1, self.capacity // 2))
            if full and not self._outcomes.buffer:
                self._changed.wait(0.5)
                return True
        if full:  # settle first: never wait with outcomes in hand
            self._flush_acks(force=True)
            return True
        if self._drained and not self.burst and self.transport.wait_sees_earlier_work:
            self._drained = False  # wait first: what was published since wakes it at once
            self._flush_acks(force=True)
            self.transport.wait(self.queues, _IDLE_WAIT)
            if self.shutdown.warm.is_set():  # asked to stop while waiting: take nothing
                return False
        batch = self._outcomes.settle_and_reserve(self.queues, room, self.lease)
        self._drained = 0 < len(batch) < room  # (an empty one waits below)
        if not batch:
            if self._held:
                with self._changed:
                    self._changed.wait(0.2)
                return True
            if not self.burst:
                self.transport.wait(self.queues, _IDLE_WAIT)
            return False
        reserved_at = time.monotonic()
        revoked = self._revoked_among(batch)
        dropped = self.runner.intake.receive(batch, revoked)
        with self._changed:
            for delivery in batch:
                if delivery.id in dropped:
                    continue
                self._held[delivery.id] = delivery
                self._pending.append((delivery, delivery.id in revoked, reserved_at))
            self._changed.notify_all()
        return True

    def _revoked_among(self, batch: list[Delivery]) -> set[str]:
        """Ids of ``batch`` marked revoked: a broker flags them as it reserves; with a
        store of its own, one more round trip asks it."""
        if self.runtime.connections.joint is not None:
            return {delivery.id for delivery in batch if delivery.revoked}
        return self.runtime.store.revoked([delivery.id for delivery in batch])

    def _start_executor(self) -> None:
        self._executors = getattr(self, "_executors", 0) + 1
        name = f"flask-tasks-{self._executors}"
        threading.Thread(target=self._execute_loop, name=name, daemon=True).start()

    def _execute_loop(self) -> None:
        while not self._stopped.is_set():
            with self._changed:
                while not self._pending and not self._stopped.is_set():
                    if self.shutdown.warm.is_set() and not self._running:
                        break
                    if self._retire > 0:  # autoscaling down: an idle thread stops
                        self._retire -= 1
                        return
                    self._changed.wait(0.5)
                if not self._pending:
                    if self.shutdown.warm.is_set() or self._stopped.is_set():
                        return
                    continue
                reserved = self._pending.popleft()
            self._execute(*reserved)
            if threading.get_ident() in self._abandoned_threads:
                return  # another thread took this one's place at a time limit

    def _execute(self, delivery: Delivery, revoked: bool, reserved_at: float) -> None:
        try:
            if not revoked and time.monotonic() - reserved_at > _REVOKE_RECHECK_AFTER:
                revoked = bool(self.runtime.store.revoked([delivery.id]))
            self.runner.process(delivery, revoked, self._track)
        except OperationalError as error:
            # The outcome could not be stored; the lease will bring the message back.
            logger.error("Lost the broker while finishing %s: %s", loggable(delivery.id), error)
        except Exception:
            logger.exception("Internal error while processing message %s", loggable(delivery.id))
        finally:
            with self._changed:
                self._held.pop(delivery.id, None)
                self.tasks_done += 1
                self._stalled = False
                self._changed.notify_all()
            self._after_task()

    def _after_task(self) -> None:
        if self.max_tasks and self.tasks_done >= self.max_tasks:
            logger.info("Done %d tasks (max per child); restarting", self.tasks_done)
            self.shutdown.warm.set()
        if self.max_memory_kib and not self.memory_exceeded:
            used = rss_kib()
            if used is not None and used > self.max_memory_kib:
                self.memory_exceeded = True
                logger.warning(
                    "Process %d uses %d KiB, over --max-memory-per-child %d KiB; restarting",
                    os.getpid(),
                    used,
                    self.max_memory_kib,
                )
                self.shutdown.warm.set()

    def _flush_acks(self, force: bool) -> None:
        self._outcomes.flush(force)

    def _track(self, message_id: str, task: Optional[Task[Any, Any]]) -> None:
        with self._lock:
            if task is None:
                if self._signals is not None:
                    self._signals.disarm()
                self._running.pop(message_id, None)
                return
            options = self.runtime.options_for(task.name)
            now = time.monotonic()
            soft, hard = options.get("soft_time_limit"), options.get("time_limit")
            self._running[message_id] = Running(
                threading.get_ident(),
                task,
                now,
                now + soft if soft else None,
                now + hard if hard else None,
                self._interrupter(),
            )

    def _interrupter(self) -> Interrupt:
        """How to raise a time limit in the task starting on this thread."""
        if self._signals is not None and threading.current_thread() is threading.main_thread():
            return self._signals.arm()
        if self.pool in ("gevent", "eventlet"):
            from .green import greenlet_interrupter

            return greenlet_interrupter(self.pool)
        return thread_interrupter()

    # -- shutdown -------------------------------------------------------------------------

    def _return_pending(self) -> None:
        """Give unstarted prefetched messages back, keeping their order at the front."""
        with self._lock:
            returned = list(self._pending)
            self._pending.clear()
        self.runner.intake.forget([delivery.id for delivery, _revoked, _at in returned])
        for delivery, _revoked, _reserved_at in reversed(returned):
            try:
                self.transport.release(delivery)
            except OperationalError as error:
                logger.warning("Could not return %s (its lease will): %s", delivery.id, error)
            with self._lock:
                self._held.pop(delivery.id, None)
        if returned:
            logger.info("Returned %d prefetched message(s) to their queues", len(returned))

    def _return_stalled(self, now: float) -> None:
        """Give prefetched messages back when every slot has run one task for longer
        than ``STALL_RETURN``: prefetching pays for short tasks, and must not keep work
        from idle workers behind a long one."""
        with self._lock:
            if not self._pending or len(self._running) < self.concurrency:
                return
            if self.autoscale and self.concurrency < self.autoscale[0]:
                return  # more threads are coming for them
            if min(entry.started for entry in self._running.values()) > now - STALL_RETURN:
                return
            returned = list(self._pending)
            self._pending.clear()
            self._stalled = True
            for delivery, _revoked, _reserved_at in returned:
                self._held.pop(delivery.id, None)
        self.runner.intake.forget([delivery.id for delivery, _revoked, _at in returned])
        try:
            for delivery, _revoked, _reserved_at in reversed(returned):
                self.transport.release(delivery)
        except OperationalError as error:
            logger.warning("Could not return prefetched messages (leases will): %s", error)
        logger.info(
            "Returned %d prefetched message(s) to their queues: slow tasks ahead of them",
            len(returned),
        )

    def _wait_for_running(self) -> None:
        with self._changed:
            while self._held and not self.shutdown.cold.is_set():
                self._changed.wait(0.2)

    def _cold_exit(self) -> None:
        with self._lock:
            held = list(self._held.values())
        logger.warning("Cold shutdown: returning %d message(s) and exiting now", len(held))
        for delivery in held:
            try:
                self.transport.release(delivery)
            except Exception as error:  # the lease brings it back anyway
                logger.warning("Could not return %s: %s", loggable(delivery.id), error)
        os._exit(1)
