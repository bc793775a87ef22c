"""The monitor thread of a consumer: what happens beside the running tasks.

Once per tick it renews the leases of held messages, enforces time limits, stops tasks
revoked with ``terminate=True``, gives stalled prefetched messages back, and turns
shutdown requests into actions. Once a second it reads rate-limit overrides
(``flask tasks rate-limit``) and scales the threads pool (``--autoscale``); it writes the
worker's heartbeat (``flask tasks status``) every ``ANNOUNCE_EVERY`` seconds, and within
a second when the running tasks change.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..brokers import Delivery
from ..exceptions import OperationalError, TaskRevokedError, TimeLimitExceeded
from ..records import Record
from .control import HARD_LIMIT_GRACE, Running, Shutdown, enforce_time_limits
from .scaling import AUTOSCALE_KEEPALIVE

if TYPE_CHECKING:
    from ..runtime import Runtime
    from .runner import TaskRunner

logger = logging.getLogger("flask_tasks.worker")

_MONITOR_TICK = 0.1
#: Seconds between heartbeats in the store (a worker is listed for three times that).
ANNOUNCE_EVERY = 10.0
#: The store namespace of rate-limit overrides: task name -> rate.
RATE_LIMITS = "rate_limits"


class Monitor:
    """The monitor half of :class:`~flask_tasks.worker.consumer.Consumer`."""

    runtime: Runtime
    runner: TaskRunner
    hostname: str
    queues: list[str]
    pool: str
    concurrency: int
    autoscale: Optional[tuple[int, int]]
    lease: float
    shutdown: Shutdown
    parent_pid: Optional[int]
    exclusive_process: bool
    threaded: bool
    tasks_done: int
    _lock: threading.Lock
    _changed: threading.Condition
    _held: dict[str, Delivery]
    _pending: deque[tuple[Delivery, bool, float]]
    _running: dict[str, Running]
    _stopped: threading.Event
    _retire: int
    _abandoned_threads: set[int]
    on_load: Optional[Callable[[int, bool], None]]

    def _return_stalled(self, now: float) -> None:
        raise NotImplementedError

    def _cold_exit(self) -> None:
        raise NotImplementedError

    def _start_executor(self) -> None:
        raise NotImplementedError

    def _monitor(self) -> None:
        beat_every = max(0.05, min(self.lease / 3, 10.0))
        now = time.monotonic()
        next_beat, next_second = now + beat_every, now
        self._next_announce, self._announced_running = now, frozenset[str]()
        self._idle_since: Optional[float] = None
        self._overrides_supported = True
        while not self._stopped.wait(_MONITOR_TICK):
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                logger.warning("Parent process is gone; shutting down")
                self.shutdown.warm.set()
            if self.shutdown.cold.is_set():
                self._cold_exit()
            now = time.monotonic()
            self._enforce_time_limits(now)
            self._return_stalled(now)
            try:
                if now >= next_beat:
                    next_beat = now + beat_every
                    with self._lock:
                        held = list(self._held.values())
                    if held:  # by delivery: a lease another worker took is not renewed
                        self.runtime.transport.extend(held, self.lease)
                if now >= next_second:
                    next_second = now + 1.0
                    self._every_second(now)
            except OperationalError as error:
                logger.warning("Heartbeat failed: %s", error)
            except Exception:
                logger.exception("Heartbeat error")

    def _every_second(self, now: float) -> None:
        self._terminate_revoked()
        self._refresh_rate_limits()
        if self.threaded and self.autoscale:
            self._autoscale_threads(now)
        if self.on_load is not None:
            with self._lock:
                busy, waiting = len(self._running), bool(self._pending)
            self.on_load(busy, waiting or bool(busy and self._backlog()))
        with self._lock:
            running = frozenset(self._running)
        if now >= self._next_announce or running != self._announced_running:
            self._next_announce, self._announced_running = now + ANNOUNCE_EVERY, running
            self._announce()

    # -- heartbeats -----------------------------------------------------------------------

    def announcement(self) -> dict[str, Any]:
        """What this consumer tells the store about itself (``flask tasks status``)."""
        now = time.monotonic()
        with self._lock:
            running = [
                {
                    "id": message_id,
                    "task": entry.task.name,
                    "seconds": round(now - entry.started, 3),
                }
                for message_id, entry in self._running.items()
            ]
            held = len(self._held)
        return {
            "hostname": self.hostname,
            "pid": os.getpid(),
            "parent": self.parent_pid,
            "pool": self.pool,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "autoscale": list(self.autoscale) if self.autoscale else None,
            "held": held,
            "running": running,
            "done": self.tasks_done,
            "at": self.runner.clock.now(),  # the broker's time, as readers judge it
            "stats": self.runner.stats.snapshot(),
        }

    def _announce(self) -> None:
        """Tell the store this consumer is alive, and what it runs (``Store.workers``)."""
        info = json.dumps(self.announcement()).encode()
        name = f"{self.hostname}:{os.getpid()}"
        self.runtime.store.heartbeat(name, info, ANNOUNCE_EVERY * 3)

    # -- rate limits ----------------------------------------------------------------------

    def _refresh_rate_limits(self) -> None:
        """Apply ``flask tasks rate-limit`` overrides, read from the store."""
        if not self._overrides_supported:
            return
        try:
            stored = self.runtime.store.get_values(RATE_LIMITS)
        except NotImplementedError as error:
            logger.warning("Rate limits cannot be changed at run time: %s", error)
            self._overrides_supported = False
            return
        overrides = {name: value.decode() for name, value in stored.items()}
        limiter = self.runner.rate_limiter
        if overrides != limiter.overrides:
            for name in sorted(set(overrides) | set(limiter.overrides)):
                if overrides.get(name) != limiter.overrides.get(name):
                    logger.info("Rate limit of %s is now %s", name, overrides.get(name, "as set"))
            limiter.overrides = overrides

    # -- time limits and revocation -------------------------------------------------------

    def _enforce_time_limits(self, now: float) -> None:
        with self._lock:
            running = list(self._running.items())
        # Signals interrupt blocking calls: wait a moment for the task to end by itself.
        grace = HARD_LIMIT_GRACE if self.exclusive_process else 0.0
        for message_id, entry in running:
            if enforce_time_limits(message_id, entry, now, grace):
                self._abandon(message_id, entry)

    def _abandon(self, message_id: str, entry: Running) -> None:
        """A task past its hard time limit that has not stopped: record the failure.

        A process of its own (solo, prefork child) ends, and its parent starts a new
        one; a thread or greenlet is left to finish alone (its outcome is discarded) and
        another takes its place."""
        error = TimeLimitExceeded(f"{entry.task.name} exceeded its time limit and was killed")
        with self._lock:
            if self._running.pop(message_id, None) is None:
                return  # it ended meanwhile
            delivery = self._held.pop(message_id, None)
            self._abandoned_threads.add(entry.thread_id)
            self._changed.notify_all()  # a shutdown no longer waits for it
        self.runner.abandoned.add(message_id)
        elapsed = time.monotonic() - entry.started
        self.runner.stats.record(entry.task.name, "FAILURE", elapsed, message_id, str(error))
        record = Record.failure(error, entry.task.name, worker=self.hostname)
        try:  # by delivery, fenced: the abandoned thread's lease may have moved on
            self.runner.settle_now(delivery or message_id, record)
        except OperationalError as failure:  # its lease, no longer renewed, brings it back
            logger.error(
                "Could not settle stuck task %s[%s]: %s", entry.task.name, message_id, failure
            )
        if self.exclusive_process:
            logger.error(
                "Task %s[%s] did not stop; exiting this process", entry.task.name, message_id
            )
            os._exit(1)
        logger.error(
            "Task %s[%s] failed at its time limit; its %s is abandoned and replaced",
            entry.task.name,
            message_id,
            "greenlet" if self.pool in ("gevent", "eventlet") else "thread",
        )
        self._start_executor()

    def _terminate_revoked(self) -> None:
        with self._lock:
            running = dict(self._running)
        if not running:
            return
        for message_id in self.runtime.store.terminating(list(running)):
            entry = running.get(message_id)
            if entry is not None and "revoke" not in entry.signalled:
                entry.signalled.add("revoke")
                logger.info("Terminating revoked task %s[%s]", entry.task.name, message_id)
                entry.interrupt(TaskRevokedError)

    # -- autoscaling (threads) ------------------------------------------------------------

    def _autoscale_threads(self, now: float) -> None:
        """One more thread while messages wait and every thread is busy; one fewer after
        ``AUTOSCALE_KEEPALIVE`` seconds with threads idle."""
        assert self.autoscale is not None
        maximum, minimum = self.autoscale
        with self._lock:
            busy, waiting = len(self._running), bool(self._pending)
            current = self.concurrency
        if busy >= current and current < maximum:
            if waiting or self._backlog():
                self._idle_since = None
                self._resize(current, current + 1)
                self._start_executor()
            return
        if busy >= current or current <= minimum:
            self._idle_since = None
            return
        if self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since >= AUTOSCALE_KEEPALIVE:
            self._idle_since = now
            self._resize(current, current - 1)
            with self._changed:
                self._retire += 1
                self._changed.notify_all()

    def _backlog(self) -> bool:
        return any(self.runtime.transport.queue_length(queue) for queue in self.queues)

    def _resize(self, old: int, new: int) -> None:
        with self._lock:
            self.concurrency = new
        logger.info("Autoscale: %d -> %d threads", old, new)
