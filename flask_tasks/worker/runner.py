"""Processing one delivered message: decode, vet, run, store the outcome, continue workflows.

A message that cannot be decoded, fails its signature, or names an unknown task is
dead-lettered with the reason; nothing here lets one bad message stop the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Optional

from .. import signals, states
from ..brokers import Delivery, Envelope
from ..canvas import Signature
from ..exceptions import DecodeError, EncodeError, NotRegistered, TaskError
from ..execution import ExceptionInfo, Outcome, execute, is_expected
from ..message import Message
from ..result import exception_to_dict
from ..task import Request, Task, pop_request, push_request
from .rate_limit import RateLimiter

if TYPE_CHECKING:
    from ..app_state import TasksState

logger = logging.getLogger("flask_tasks.worker")

#: Called when a task starts (message id, task) and ends (message id, None).
RunningHook = Callable[[str, Optional[Task[Any, Any]]], None]


def _revoked_error(reason: str) -> dict[str, Any]:
    return {
        "exc_type": "TaskRevokedError",
        "exc_module": "flask_tasks.exceptions",
        "exc_message": reason,
    }


class TaskRunner:
    """Runs deliveries for one worker process (shared by its threads)."""

    def __init__(self, state: TasksState, hostname: str) -> None:
        self.state = state
        self.hostname = hostname
        self.rate_limiter = RateLimiter(state)
        #: When a list, outcomes (``(id, record, ttl)``) are collected here for the
        #: consumer to send in one batch (``Broker.ack_many``) instead of one by one.
        self.ack_buffer: Optional[list[tuple[str, Optional[bytes], float]]] = None

    @property
    def broker(self) -> Any:
        return self.state.broker

    # -- vetting --------------------------------------------------------------------------

    def decode(self, delivery: Delivery) -> Optional[Message]:
        """The message in ``delivery``, or None after dead-lettering it with the reason."""
        try:
            message = Message.from_dict(self.state.codec.decode(delivery.body))
        except DecodeError as error:
            self._dead_letter(delivery, f"DecodeError: {error}")
            return None
        if message.task not in self.state.extension._registry:
            unknown = NotRegistered(self.state.extension._unknown_task_message(message.task))
            if signals.task_unknown.receivers:
                signals.task_unknown.send(
                    self, name=message.task, id=message.id, message=delivery.body, exc=unknown
                )
            if not message.ignore_result:  # so get() raises instead of waiting forever
                self._store(
                    message,
                    self.state.make_record(
                        states.FAILURE, exception_to_dict(unknown), task=message.task
                    ),
                )
            self._dead_letter(delivery, f"NotRegistered: {unknown}")
            return None
        return message

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        logger.error("Message %s dead-lettered: %s", delivery.id, reason)
        self.broker.dead_letter(delivery, reason)

    # -- running --------------------------------------------------------------------------

    def process(
        self,
        delivery: Delivery,
        revoked: bool = False,
        on_running: Optional[RunningHook] = None,
    ) -> None:
        """Run one delivery to its end; never raises for anything the task does."""
        message = self.decode(delivery)
        if message is None:
            return
        task = self.state.extension._registry[message.task]
        options = self.state.task_options(task)
        request = self._request(message, delivery)
        if signals.task_received.receivers:
            signals.task_received.send(self, request=request)
        logger.info("Task %s[%s] received", message.task, message.id)
        if revoked or (message.expires is not None and message.expires < time.time()):
            self._skip_revoked(task, message, request, expired=not revoked)
            return
        delay = self.rate_limiter.delay_for(task.name, options.get("rate_limit"))
        if delay:
            self.broker.release(message.id, eta=time.time() + delay)
            return
        acks_late = options.get("acks_late")
        if acks_late is None:
            acks_late = self.state.config.acks_late
        if not acks_late:
            self.broker.ack(message.id)
        if options.get("track_started"):
            self._store(
                message,
                self.state.make_record(
                    states.STARTED, {"pid": None, "hostname": self.hostname}, task=message.task
                ),
            )
        started = time.perf_counter()
        if on_running:
            on_running(message.id, task)
        try:
            outcome = execute(self.state, task, request)
        finally:
            if on_running:
                on_running(message.id, None)
        self._finish(task, message, request, outcome, time.perf_counter() - started, acks_late)

    def _request(self, message: Message, delivery: Delivery) -> Request:
        from datetime import datetime, timezone

        def as_datetime(stamp: Optional[float]) -> Optional[datetime]:
            return datetime.fromtimestamp(stamp, timezone.utc) if stamp is not None else None

        return Request(
            id=message.id,
            task=message.task,
            args=tuple(message.args),
            kwargs=message.kwargs,
            retries=message.retries,
            eta=as_datetime(message.eta),
            expires=as_datetime(message.expires),
            queue=delivery.queue,
            priority=delivery.priority,
            headers=message.headers,
            parent_id=message.parent_id,
            root_id=message.root_id or message.id,
            group_id=message.group_id,
            hostname=self.hostname,
            called_directly=False,
            ignore_result=message.ignore_result,
            delivery_info={"routing_key": delivery.queue, "priority": delivery.priority},
            message=message,
        )

    def _skip_revoked(
        self, task: Task[Any, Any], message: Message, request: Request, expired: bool
    ) -> None:
        reason = "expired before it started" if expired else "revoked"
        logger.info("Task %s[%s] %s; not run", message.task, message.id, reason)
        record = self.state.make_record(states.REVOKED, _revoked_error(reason), task=message.task)
        self._ack(message, record, acks_late=True)
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
    ) -> None:
        if outcome.state == states.RETRY:
            self._retry(message, outcome, runtime, acks_late)
            return
        record: Optional[bytes] = None
        if outcome.state == states.SUCCESS:
            children = self._follow_up(message, request, outcome.value)
            record = self._success_record(message, outcome, children)
            if outcome.state == states.SUCCESS:  # the result may have failed to encode
                logger.info(
                    "Task %s[%s] succeeded in %.4fs: %.200r",
                    message.task,
                    message.id,
                    runtime,
                    outcome.value,
                )
        if outcome.state in (states.FAILURE, states.REVOKED):
            record = self._failure_record(task, message, outcome)
            self._errbacks(message, request)
            self._log_failure(task, message, outcome, runtime)
        if outcome.state == states.REVOKED and signals.task_revoked.receivers:
            signals.task_revoked.send(
                task, request=request, terminated=True, signum=None, expired=False
            )
        self._ack(message, record, acks_late)

    def _success_record(
        self, message: Message, outcome: Outcome, children: list[str]
    ) -> Optional[bytes]:
        if message.ignore_result and not message.chord:
            return None
        try:
            return self.state.make_record(
                states.SUCCESS,
                outcome.value,
                task=message.task,
                parent_id=message.parent_id,
                children=children,
                retries=message.retries,
                worker=self.hostname,
            )
        except EncodeError as error:
            outcome.state, outcome.value, outcome.einfo = (
                states.FAILURE,
                error,
                ExceptionInfo(error),
            )
            return None

    def _failure_record(
        self, task: Task[Any, Any], message: Message, outcome: Outcome
    ) -> Optional[bytes]:
        if (
            message.ignore_result
            and not self.state.task_options(task).get("store_errors_even_if_ignored")
            and not message.chord
        ):
            return None
        return self.state.make_record(
            outcome.state,
            exception_to_dict(outcome.value),
            outcome.traceback,
            task=message.task,
            parent_id=message.parent_id,
            retries=message.retries,
            worker=self.hostname,
        )

    def _log_failure(
        self, task: Task[Any, Any], message: Message, outcome: Outcome, runtime: float
    ) -> None:
        if outcome.state == states.REVOKED:  # revoke(terminate=True) stopped it
            logger.warning(
                "Task %s[%s] terminated (revoked) after %.4fs", message.task, message.id, runtime
            )
        elif is_expected(task, outcome.value):
            logger.info(
                "Task %s[%s] raised expected %r in %.4fs",
                message.task,
                message.id,
                outcome.value,
                runtime,
            )
        else:
            logger.error(
                "Task %s[%s] failed in %.4fs: %r\n%s",
                message.task,
                message.id,
                runtime,
                outcome.value,
                outcome.traceback,
            )

    def _retry(self, message: Message, outcome: Outcome, runtime: float, acks_late: bool) -> None:
        retry = outcome.retry
        eta = (retry.eta if retry else None) or time.time()
        args = retry.args_override if retry else None
        kwargs = retry.kwargs_override if retry else None
        again = replace(
            message,
            retries=message.retries + 1,
            eta=eta,
            args=list(args) if args is not None else message.args,
            kwargs=dict(kwargs) if kwargs is not None else message.kwargs,
        )
        record = self.state.make_record(
            states.RETRY,
            exception_to_dict(outcome.value),
            outcome.traceback,
            task=message.task,
            retries=again.retries,
        )
        logger.info(
            "Task %s[%s] retry %d in %.1fs after %.4fs: %r",
            message.task,
            message.id,
            again.retries,
            max(0.0, eta - time.time()),
            runtime,
            outcome.value,
        )
        body = self.state.encode_message(again)
        if not acks_late:  # acked when it started: the broker holds nothing to release
            envelope = Envelope(message.id, message.queue, body, message.priority, eta)
            self.state.publish_envelopes([envelope], {message.id: record})
        elif self.state.shares_backend:
            self.broker.release(
                message.id,
                body=body,
                eta=eta,
                record=record,
                record_ttl=self.state.config.result_expires,
            )
        else:
            self.state.backend.set_result(message.id, record, self.state.config.result_expires)
            self.broker.release(message.id, body=body, eta=eta)

    def _ack_by_id(self, message_id: str, record: bytes) -> None:
        """Ack a message with a final record, when the task cannot finish by itself."""
        if self.state.shares_backend:
            self.broker.ack(message_id, record, self.state.config.result_expires)
        else:
            self.state.backend.set_result(message_id, record, self.state.config.result_expires)
            self.broker.ack(message_id)

    def _store(self, message: Message, record: bytes) -> None:
        self.state.backend.set_result(message.id, record, self.state.config.result_expires)

    def _ack(self, message: Message, record: Optional[bytes], acks_late: bool) -> None:
        ttl = self.state.config.result_expires
        if not acks_late:
            if record is not None:
                self._store(message, record)
        elif self.state.shares_backend and self.ack_buffer is not None:
            self.ack_buffer.append((message.id, record, ttl))
        elif record is not None and self.state.shares_backend:
            self.broker.ack(message.id, record, ttl)
        else:
            if record is not None:
                self._store(message, record)
            self.broker.ack(message.id)

    # -- workflows ------------------------------------------------------------------------

    def _follow_up(self, message: Message, request: Request, value: Any) -> list[str]:
        """Send the next chain step, link callbacks and a completed chord's body."""
        if not (message.chain or message.link or message.chord):
            return []
        sent: list[str] = []
        with self._as_parent(request):
            if message.chain:
                step = Signature.from_dict(message.chain[0], self.state.extension)
                sent.append(step.apply_async((value,), chain=message.chain[1:]).id)
            for link in message.link:
                sent.append(
                    Signature.from_dict(link, self.state.extension).apply_async((value,)).id
                )
            if message.chord:
                sent += self._chord_part_done(message, value)
        return sent

    def _chord_part_done(self, message: Message, value: Any) -> list[str]:
        chord = message.chord or {}
        # Store this member's result before counting it: the member whose count completes
        # the chord then finds every other member's result already stored.
        try:
            record = self.state.make_record(
                states.SUCCESS, value, task=message.task, parent_id=message.parent_id
            )
        except EncodeError:
            return []  # not counted: the task fails, which fails the chord (see _errbacks)
        self._store(message, record)
        ttl = max(self.state.config.result_expires, 3600)
        if self.broker.incr(f"chord:{chord['group_id']}", ttl) != chord["size"]:
            return []
        values = [
            (self.state.decode_record(raw) or {}).get("result")
            for raw in self.state.backend.get_results(chord["results"])
        ]
        body = Signature.from_dict(chord["body"], self.state.extension)
        return [body.apply_async((values,)).id]

    def _errbacks(self, message: Message, request: Request) -> None:
        with self._as_parent(request):
            for link in message.link_error:
                Signature.from_dict(link, self.state.extension).apply_async((message.id,))
            if message.chord:
                body = Signature.from_dict(message.chord["body"], self.state.extension)
                error = TaskError(f"chord member {message.task}[{message.id}] failed")
                self.state.backend.set_result(
                    body.options["task_id"],
                    self.state.make_record(
                        states.FAILURE, exception_to_dict(error), task=body.task
                    ),
                    self.state.config.result_expires,
                )

    @contextmanager
    def _as_parent(self, request: Request) -> Iterator[None]:
        """Send follow-up tasks as children of ``request``, inside the app context."""
        with self.state.app.app_context():
            token = push_request(request)
            try:
                yield
            finally:
                pop_request(token)
