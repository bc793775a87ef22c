"""Processing one delivered message: decode, vet, run, settle the outcome, continue workflows.

A message that cannot be decoded, fails its signature, or names an unknown task is
dead-lettered with the reason; nothing here lets one bad message stop the worker.

*Settling* a message acks it and stores its result record: one atomic step and one round
trip when the store is the transport's own server (``Connections.broker``), the record
first and then the ack otherwise (a crash in between runs the task again, at least once).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Optional

from .. import signals, states
from ..brokers import Delivery, Envelope, Held, Settlement, lease_of
from ..exceptions import (
    EncodeError,
)
from ..execution import ExceptionInfo, Outcome, execute, is_expected
from ..message import Message, Request, to_timestamp
from ..records import Record
from .clock import BrokerClock
from .intake import Intake
from .logs import loggable
from .rate_limit import RateLimiter
from .stats import TaskStats
from .workflows import Workflows

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..task import Task

logger = logging.getLogger("flask_tasks.worker")

#: Called when a task starts (message id, task) and ends (message id, None).
RunningHook = Callable[[str, Optional["Task[Any, Any]"]], None]


class TaskRunner:
    """Runs deliveries for one worker process (shared by its threads)."""

    def __init__(self, runtime: Runtime, hostname: str) -> None:
        self.runtime = runtime
        self.hostname = hostname
        self.rate_limiter = RateLimiter(runtime.store)
        #: Judges ``expires`` (set by the publisher) by the broker's clock.
        self.clock = BrokerClock(runtime)
        self.workflows = Workflows(runtime, runtime.owner)
        #: When a list, settlements are collected here for the consumer to send in one
        #: batch (:meth:`settle`) instead of one by one.
        self.settle_buffer: Optional[list[Settlement]] = None
        #: Messages failed at their hard time limit while their thread went on: its
        #: outcome, when it comes, is discarded.
        self.abandoned: set[str] = set()
        #: Decodes and vets what the consumer reserves.
        self.intake = Intake(runtime, hostname)
        #: Counts and run times of finished tasks, sent with the heartbeat.
        self.stats = TaskStats()

    # -- running --------------------------------------------------------------------------

    def process(
        self,
        delivery: Delivery,
        revoked: bool = False,
        on_running: Optional[RunningHook] = None,
    ) -> None:
        """Run one delivery to its end; never raises for anything the task does."""
        message = self.intake.take(delivery)
        if message is None:
            return
        runtime = self.runtime
        task = runtime.registry[message.task]
        options = runtime.options_for(task.name)
        request = Request(message, hostname=self.hostname)
        if signals.task_received.receivers:
            signals.task_received.send(self, request=request)
        logger.info("Task %s[%s] received", loggable(message.task), loggable(message.id))
        if revoked or (message.expires is not None and message.expires < self.clock.now()):
            self._skip_revoked(task, message, request, delivery, expired=not revoked)
            return
        delay = self.rate_limiter.delay_for(task.name, options.get("rate_limit"))
        if delay:
            runtime.transport.release(delivery, eta=time.time() + delay)
            return
        if not self.intake.may_start(delivery, message):
            return
        acks_late = options.get("acks_late")
        if acks_late is None:
            acks_late = runtime.config.acks_late
        if not acks_late:
            runtime.transport.ack([delivery])
        if options.get("track_started"):
            runtime.write(message.id, Record.started(message.task, self.hostname, os.getpid()))
        started = time.perf_counter()
        if on_running:
            on_running(message.id, task)
        try:
            outcome = execute(runtime, task, request)
        finally:
            if on_running:
                on_running(message.id, None)
        elapsed = time.perf_counter() - started
        self._finish(task, message, request, outcome, elapsed, acks_late, delivery)

    def _skip_revoked(
        self,
        task: Task[Any, Any],
        message: Message,
        request: Request,
        delivery: Delivery,
        expired: bool,
    ) -> None:
        reason = "expired before it started" if expired else "revoked"
        self.stats.record(message.task, states.REVOKED, None)
        logger.info("Task %s[%s] %s; not run", loggable(message.task), loggable(message.id), reason)
        self._settle_one(delivery, Record.revoked(reason, message.task), acks_late=True)
        if signals.task_revoked.receivers:
            signals.task_revoked.send(
                task, request=request, terminated=False, signum=None, expired=expired
            )

    # -- outcomes -------------------------------------------------------------------------

    def _finish(
        self,
        task: Task[Any, Any],
        message: Message,
        request: Request,
        outcome: Outcome,
        runtime: float,
        acks_late: bool,
        delivery: Delivery,
    ) -> None:
        if message.id in self.abandoned:
            self.abandoned.discard(message.id)
            logger.warning(
                "Task %s[%s] ended %.1fs after it was failed at its time limit; its outcome "
                "(%s) is discarded",
                message.task,
                message.id,
                runtime,
                outcome.state,
            )
            return
        error = "" if outcome.state == states.SUCCESS else _summary(outcome.value)
        self.stats.record(message.task, outcome.state, runtime, message.id, error)
        if outcome.state == states.RETRY:
            self._retry(message, outcome, runtime, acks_late, delivery)
            return
        if outcome.state == states.SUCCESS:
            try:
                children = self.workflows.after_success(message, request, outcome.value)
            except Exception as error:  # the body ran; what follows it could not be sent
                cause = EncodeError(
                    f"{message.task} succeeded, but its next step could not be sent: "
                    f"{type(error).__name__}: {error}"
                )
                outcome = Outcome(states.FAILURE, cause, ExceptionInfo(cause))
        record: Optional[Record] = None
        if outcome.state == states.SUCCESS:
            if not message.ignore_result or message.chord:
                record = Record.success(
                    outcome.value,
                    message.task,
                    parent_id=message.parent_id,
                    children=children,
                    retries=message.retries,
                    worker=self.hostname,
                )
            logger.info(
                "Task %s[%s] succeeded in %.4fs: %s",
                loggable(message.task),
                loggable(message.id),
                runtime,
                loggable(outcome.value, 200),
            )
        else:
            record = self._failure_record(task, message, outcome)
            self.workflows.after_failure(message, request)
            self._log_failure(task, message, outcome, runtime)
            if outcome.state == states.REVOKED and signals.task_revoked.receivers:
                signals.task_revoked.send(
                    task, request=request, terminated=True, signum=None, expired=False
                )
        self._settle_one(delivery, record, acks_late)

    def _failure_record(
        self, task: Task[Any, Any], message: Message, outcome: Outcome
    ) -> Optional[Record]:
        if (
            message.ignore_result
            and not self.runtime.options_for(task.name).get("store_errors_even_if_ignored")
            and not message.chord
        ):
            return None
        return Record.failure(
            outcome.value,
            message.task,
            traceback=outcome.traceback,
            state=outcome.state,
            parent_id=message.parent_id,
            retries=message.retries,
            worker=self.hostname,
        )

    def _log_failure(
        self, task: Task[Any, Any], message: Message, outcome: Outcome, runtime: float
    ) -> None:
        name, task_id = loggable(message.task), loggable(message.id)
        if outcome.state == states.REVOKED:  # revoke(terminate=True) stopped it
            logger.warning("Task %s[%s] terminated (revoked) after %.4fs", name, task_id, runtime)
        elif is_expected(task, outcome.value):
            logger.info(
                "Task %s[%s] raised expected %s in %.4fs",
                name,
                task_id,
                loggable(outcome.value),
                runtime,
            )
        else:
            logger.error(
                "Task %s[%s] failed in %.4fs: %s\n%s",
                name,
                task_id,
                runtime,
                loggable(outcome.value),
                loggable(outcome.traceback, 8000, lines=True),
            )

    def _retry(
        self,
        message: Message,
        outcome: Outcome,
        runtime: float,
        acks_late: bool,
        delivery: Delivery,
    ) -> None:
        retry = outcome.retry
        eta = (retry.eta if retry else None) or time.time()
        args = retry.args_override if retry else None
        kwargs = retry.kwargs_override if retry else None
        options = retry.options if retry else {}
        again = replace(
            message,
            retries=message.retries + 1,
            eta=eta,
            args=list(args) if args is not None else message.args,
            kwargs=dict(kwargs) if kwargs is not None else message.kwargs,
            queue=options.get("queue") or message.queue,
            priority=options.get("priority", message.priority),
            headers={**message.headers, **(options.get("headers") or {})},
            expires=to_timestamp(options["expires"])
            if options.get("expires") is not None
            else message.expires,
        )
        record = Record.failure(
            outcome.value,
            message.task,
            traceback=outcome.traceback,
            state=states.RETRY,
            retries=again.retries,
        )
        logger.info(
            "Task %s[%s] retry %d in %.1fs after %.4fs: %s",
            loggable(message.task),
            loggable(message.id),
            again.retries,
            max(0.0, eta - time.time()),
            runtime,
            loggable(outcome.value),
        )
        self._send_again(message, again, record, acks_late, delivery)

    def _send_again(
        self, message: Message, again: Message, record: Record, acks_late: bool, delivery: Delivery
    ) -> None:
        runtime = self.runtime
        body = runtime.producer.encode(again)
        raw = record.encode(runtime.codec)
        ttl = runtime.config.result_expires
        moved = (again.queue, again.priority) != (message.queue, message.priority)
        if not acks_late or moved:
            # Acked when it started (nothing held to release), or bound elsewhere:
            # publishing the same id again replaces the held message.
            envelope = Envelope(again.id, again.queue, body, again.priority, again.eta)
            runtime.producer.publish_envelopes([envelope], {again.id: raw})
            return
        broker = runtime.connections.broker
        if broker is not None:
            released = broker.release_with_record(delivery, body, again.eta, raw, ttl)
        elif runtime.store.set_results_fenced({message.id: (raw, delivery.token)}, ttl):
            released = False  # another worker runs it now: leave its lease alone
        else:
            released = runtime.transport.release(delivery, body=body, eta=again.eta)
        if released is False:
            _log_refused([message.id], "retry")

    # -- settling -------------------------------------------------------------------------

    def _settle_one(self, delivery: Held, record: Optional[Record], acks_late: bool) -> None:
        message_id, _token = lease_of(delivery)
        raw = self._encode(message_id, record)
        if not acks_late:  # acked when it started: only the record is left to store
            if raw is not None:
                self.runtime.store.set_result(message_id, raw, self.runtime.config.result_expires)
        elif self.settle_buffer is not None:
            self.settle_buffer.append((delivery, raw))
        else:
            self.settle([(delivery, raw)])

    def _encode(self, message_id: str, record: Optional[Record]) -> Optional[bytes]:
        if record is None:
            return None
        codec = self.runtime.codec
        try:
            return record.encode(codec)
        except EncodeError as error:  # an unencodable (or too large) result fails the task
            logger.error(
                "Task %s[%s]: result not stored: %s",
                loggable(record.task),
                loggable(message_id),
                loggable(error),
            )
            # The error may quote the value at length: keep the stored failure short.
            short = EncodeError(loggable(error, 1000))
            return Record.failure(short, record.task, worker=self.hostname).encode(codec)

    def settle(self, settlements: list[Settlement]) -> None:
        """Ack messages and store their records, in one round trip where the store is the
        transport's own server. Outcomes refused by fencing (another worker took the
        message over after this one lost its lease) are logged and dropped."""
        runtime = self.runtime
        ttl = runtime.config.result_expires
        broker = runtime.connections.joint
        if broker is not None:
            refused = broker.ack_with_records(settlements, ttl)
        else:
            # Records first (a crash between the two runs the task again, never loses its
            # outcome); a separate store refuses those of a lease another worker took over.
            records = {
                lease_of(held)[0]: (raw, lease_of(held)[1])
                for held, raw in settlements
                if raw is not None
            }
            fenced = runtime.store.set_results_fenced(records, ttl) if records else []
            refused = runtime.transport.ack([held for held, _raw in settlements])
            refused += [message_id for message_id in fenced if message_id not in refused]
        if refused:
            _log_refused(refused, "outcome")

    def settle_and_reserve(
        self, settlements: list[Settlement], queues: list[str], count: int, lease: float
    ) -> list[Delivery]:
        """:meth:`settle`, then reserve up to ``count`` messages: one step on a broker
        that does both at once (SQLite: one transaction instead of two)."""
        broker = self.runtime.connections.joint
        if broker is None:
            if settlements:
                self.settle(settlements)
            return self.runtime.transport.reserve(queues, count, lease)
        refused, taken = broker.ack_and_reserve(
            settlements, self.runtime.config.result_expires, queues, count, lease
        )
        if refused:
            _log_refused(refused, "outcome")
        return taken

    def settle_now(self, message: Held, record: Record) -> None:
        """Settle a message with a final record, when its task cannot finish by itself."""
        self.settle([(message, self._encode(lease_of(message)[0], record))])


def _log_refused(message_ids: list[str], what: str) -> None:
    logger.warning(
        "Stale %s of %s refused: this worker lost the lease (paused or cut off longer than "
        "the visibility timeout) and another worker took the message over",
        what,
        ", ".join(loggable(message_id, 100) for message_id in message_ids),
    )


def _summary(value: object) -> str:
    """``ExceptionType: message``, short enough for a dashboard row (never raises: an
    exception's ``__str__`` is user code)."""
    name = type(value).__name__
    try:
        text = str(value) if isinstance(value, BaseException) else repr(value)
    except Exception:
        text = "<the error's message could not be read>"
    return f"{name}: {text}"[:300]


__all__ = ["ExceptionInfo", "RunningHook", "TaskRunner"]
