"""Taking delivered messages in: decode, vet, and record RECEIVED where asked.

A message that cannot be decoded, fails its signature, names an unknown task, or was
delivered more than ``TASKS_MAX_DELIVERIES`` times is dead-lettered with the reason, and a
FAILURE is stored under its id so that a caller's ``get()`` raises instead of waiting.
Where the transport cannot count deliveries to consumers that died, the starts of each
message are counted in the result store instead (:meth:`Intake.may_start`). A message
delivered again after a lease ran out is fenced in a separate result store.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from .. import signals
from ..brokers import Delivery
from ..exceptions import DecodeError, NotRegistered, OperationalError, WorkerLostError
from ..message import Message
from ..records import Record
from ..runtime import unknown_task_message
from .logs import loggable

if TYPE_CHECKING:
    from ..runtime import Runtime

logger = logging.getLogger("flask_tasks.worker")

#: Seconds the count of a message's starts is kept when results never expire.
START_COUNT_TTL = 7 * 86400


class Intake:
    """Decodes and vets the deliveries of one worker process."""

    def __init__(self, runtime: Runtime, hostname: str) -> None:
        self.runtime = runtime
        self.hostname = hostname
        #: Messages decoded when they were received, by id (:meth:`receive`).
        self._received: dict[str, Message] = {}

    def take(self, delivery: Delivery) -> Optional[Message]:
        """The message of ``delivery`` (decoded when it was received, or now), or None
        when it was dead-lettered."""
        return self._received.pop(delivery.id, None) or self.decode(delivery)

    def decode(self, delivery: Delivery) -> Optional[Message]:
        """The message in ``delivery``, or None after dead-lettering it with the reason
        (and storing a FAILURE under its id, so that a caller's ``get()`` raises)."""
        runtime = self.runtime
        try:
            message = Message.from_dict(runtime.codec.decode(delivery.body))
        except DecodeError as error:
            self._fail_undecodable(delivery, error)
            self._dead_letter(delivery, f"DecodeError: {error}")
            return None
        if delivery.deliveries > runtime.config.max_deliveries:
            self._dead_letter_lost(delivery, message, delivery.deliveries, "delivered")
            return None
        if message.task not in runtime.registry:
            unknown = NotRegistered(unknown_task_message(message.task, runtime.registry))
            if signals.task_unknown.receivers:
                signals.task_unknown.send(
                    self, name=message.task, id=message.id, message=delivery.body, exc=unknown
                )
            if not message.ignore_result:  # so get() raises instead of waiting forever
                runtime.write(message.id, Record.failure(unknown, message.task))
            self._dead_letter(delivery, f"NotRegistered: {unknown}")
            return None
        if delivery.deliveries > 1:
            self._fence(delivery)
        return message

    def may_start(self, delivery: Delivery, message: Message) -> bool:
        """False, after dead-lettering it, when the message's body was started more than
        ``TASKS_MAX_DELIVERIES`` times, counted in the result store. Only where the
        transport cannot count the deliveries of consumers that died (RabbitMQ): starts,
        not deliveries, are counted there, so that rate-limit deferrals and prefetched
        messages given back count for nothing. Keyed by message id and retry number."""
        runtime = self.runtime
        if runtime.transport.counts_lost_deliveries:
            return True
        key = f"starts:{message.id}:{message.retries}"
        try:
            starts = runtime.store.incr(key, runtime.config.result_expires or START_COUNT_TTL)
        except OperationalError as error:  # the transport's own count still applies
            logger.warning("Could not count the start of %s: %s", loggable(message.id), error)
            return True
        if starts <= runtime.config.max_deliveries:
            return True
        self._dead_letter_lost(delivery, message, starts, "started")
        return False

    def _dead_letter_lost(
        self, delivery: Delivery, message: Message, count: int, counted: str
    ) -> None:
        limit = self.runtime.config.max_deliveries
        lost = WorkerLostError(
            f"Message {message.id} of task {message.task} was {counted} {count} times "
            f"without finishing (TASKS_MAX_DELIVERIES is {limit}): the process running it "
            "died each time (os._exit, a signal, a crash in C code, or out of memory?)"
        )
        if not message.ignore_result:
            self.runtime.write(message.id, Record.failure(lost, message.task))
        self._dead_letter(delivery, f"WorkerLostError: {lost}")

    def _fence(self, delivery: Delivery) -> None:
        """A message delivered again after an earlier lease ran out: where the results
        live apart from the transport, mark this lease as the one running it, so that the
        worker that lost the lease cannot overwrite this one's outcome if it finishes
        after all (a :class:`~flask_tasks.brokers.Broker` fences its joint steps itself)."""
        runtime = self.runtime
        store = runtime.store
        if runtime.connections.joint is not None or not delivery.token or not store.fences_records:
            return
        try:
            store.fence(delivery.id, delivery.token, runtime.config.result_expires)
        except OperationalError as error:  # the transport still fences the ack
            logger.warning("Could not fence the outcome of %s: %s", loggable(delivery.id), error)

    def receive(self, batch: list[Delivery], revoked: set[str]) -> set[str]:
        """Decode a reserved batch and record RECEIVED for its tasks that track their
        state (``track_started``), in one write for the batch; returns the ids
        dead-lettered (they will not run). Opt-in, as STARTED is: one more write per
        batch costs a fast worker 20-30% of its throughput."""
        dropped: set[str] = set()
        records: dict[str, bytes] = {}
        codec = self.runtime.codec
        for delivery in batch:
            message = self.decode(delivery)
            if message is None:
                dropped.add(delivery.id)
                continue
            self._received[delivery.id] = message
            tracked = self.runtime.options_for(message.task).get("track_started")
            if tracked and not message.ignore_result and delivery.id not in revoked:
                records[delivery.id] = Record.received(message.task, self.hostname).encode(codec)
        if records:
            try:
                self.runtime.store.set_results(records, self.runtime.config.result_expires)
            except OperationalError as error:  # a state for people to see: go on without
                logger.warning("Could not record %d task(s) as received: %s", len(records), error)
        return dropped

    def forget(self, message_ids: list[str]) -> None:
        """Drop what :meth:`receive` kept of messages given back unrun."""
        for message_id in message_ids:
            self._received.pop(message_id, None)

    def _fail_undecodable(self, delivery: Delivery, error: DecodeError) -> None:
        """Store a FAILURE under the delivery's id (the message id) unless a finished
        record is there already: the body cannot be trusted, the id can."""
        existing = self.runtime.read(delivery.id)
        if existing is None or not existing.ready:
            self.runtime.write(delivery.id, Record.failure(error, None, worker=self.hostname))

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        logger.error("Message %s dead-lettered: %s", loggable(delivery.id), loggable(reason))
        self.runtime.transport.dead_letter(delivery, reason)
