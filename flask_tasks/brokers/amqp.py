"""RabbitMQ as a transport (``amqp://``), on pika. Results need a store of their own
(``TASKS_RESULT_BACKEND``): RabbitMQ keeps messages, not records.

How the :class:`~flask_tasks.brokers.base.Transport` contract maps onto AMQP 0-9-1:

queues and priorities
    Durable classic queues with ``x-max-priority`` 9; Flask-Tasks priority ``p``
    (0 first) travels as RabbitMQ priority ``9 - p`` (higher first). Messages are
    persistent and published with confirms and ``mandatory``.
reserve
    ``basic_get`` (manual ack), queue by queue in the order given, so the first queue
    has precedence and the server picks by priority within a queue. No message is
    pushed to a consumer ahead of time, so no prefetched message escapes the priority
    order and ``count`` is exact.
leases
    An unacked delivery belongs to this connection until it is acked or rejected, or
    the connection closes: then the server requeues it (a dead worker loses nothing).
    The lease time is kept here too: a lease that runs out before ``extend`` renews it
    is rejected with requeue, back at its place in the queue, by the next call on this
    transport or by the pump thread within a second. Unlike Redis, nobody else can take
    back a lease while this connection lives.
fencing and counting
    Each delivery's token names this transport, its connection and the delivery tag; a
    :class:`Delivery` whose lease this transport no longer holds is refused. Deliveries
    are counted as far as this transport can know (see :mod:`.amqp_leases`): a message
    whose holder died is requeued by RabbitMQ uncounted, so workers count the starts of
    each message in the result store as well (``counts_lost_deliveries`` is False).
delays
    A ladder of TTL queues (see :mod:`.amqp_topology`) in the server: nothing is held in
    worker memory, and a message reaches its queue no earlier than its ``eta``. A
    delivery whose ``eta`` is still ahead by this host's clock goes down the ladder again.
dead letters
    A dead-letter exchange and queue per prefix; ``dead_letters`` reads the queue through
    a channel of its own and closes it, which puts every message back in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from .amqp_dead import Browse
from .amqp_leases import DELIVERIES_HEADER, Lease, Leases, carried_deliveries
from .amqp_link import Link, Pump, connection_parameters, import_pika
from .amqp_topology import (
    ETA_HEADER,
    FAILED_AT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    Topology,
    amqp_priority,
    delay_ms,
    delay_route,
    header_float,
    message_headers,
    tasks_priority,
    wait_for_message,
)
from .base import (
    DeadLetter,
    Delivery,
    Envelope,
    Held,
    Transport,
    check_envelope,
    check_id_list,
    hide_password,
    lease_of,
)

logger = logging.getLogger("flask_tasks.amqp")

#: Seconds between the pump thread's rounds: heartbeats and expired leases.
PUMP_INTERVAL = 1.0


class AMQPTransport(Transport):
    """Queues in RabbitMQ (``amqp://user:password@host:5672/vhost``).

    Thread-safe: one connection carries publishing, reserving and settling under a
    lock; :meth:`wait` uses a second connection so that it blocks nobody. Each process
    opens its own (``Connections`` reopens after ``fork()``).
    """

    kind = "amqp"
    counts_lost_deliveries = False

    def __init__(self, url: str, *, key_prefix: str = "flask_tasks", **options: Any) -> None:
        self.url = hide_password(url)
        self.pika = import_pika()
        self._names = Topology(key_prefix)
        parameters = connection_parameters(url, **options)
        self._main = Link(parameters, self.url, confirm=True)
        self._waiter = Link(parameters, self.url, confirm=False)
        self._leases = Leases()
        self._pump = Pump(self._tick, PUMP_INTERVAL, "flask-tasks-amqp")

    def _tick(self) -> None:
        with self._main.lock:
            if self._main.connection is not None and self._leases:
                with self._main.using() as channel:
                    self._expire(channel)
        self._main.pump()
        self._waiter.pump()

    def ping(self) -> None:
        with self._main.using():
            self._main.connection.process_data_events(0)
        self._pump.start()

    def close(self) -> None:
        self._pump.stop()
        self._main.close()
        self._waiter.close()

    # -- publishing -------------------------------------------------------------------------

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish each envelope with a confirm. Not atomic across envelopes: a failure
        part way leaves the earlier ones published (the producer's retry may publish
        them twice). Publishing an id this transport holds acks the held delivery (the
        message is replaced); one waiting in a queue stays, and the id is then there
        twice: RabbitMQ cannot take a message out of the middle of a queue."""
        for envelope in envelopes:
            check_envelope(envelope)
        if not envelopes:
            return
        with self._main.using() as channel:
            for envelope in envelopes:
                self._send(channel, envelope, envelope.body, envelope.eta)
                for lease in self._leases.take(envelope.id) or []:
                    self._settle(channel, lease, ack=True)
                self._leases.forget(envelope.id)
        self._pump.start()

    def _send(
        self,
        channel: Any,
        envelope: Envelope,
        body: bytes,
        eta: Optional[float],
        counted: int = 0,
    ) -> None:
        """Publish ``body`` for ``envelope``: to its queue, or down the delay ladder;
        ``counted``: the deliveries it carries over."""
        delay = delay_ms(eta, self.now()) if eta is not None else 0
        headers = message_headers(envelope, eta if delay else None)
        if counted > 0:
            headers[DELIVERIES_HEADER] = counted
        properties = self.pika.BasicProperties(
            message_id=envelope.id,
            priority=amqp_priority(envelope.priority),
            delivery_mode=2,
            headers=headers,
        )
        if delay:
            self._names.declare_delays(channel, self._main.declared)
            self._names.declare_queue(channel, envelope.queue, self._main.declared)
            channel.basic_publish(
                self._names.top_exchange(), delay_route(delay), body, properties, mandatory=True
            )
        else:
            queue = self._names.declare_queue(channel, envelope.queue, self._main.declared)
            channel.basic_publish("", queue, body, properties, mandatory=True)

    # -- reserving ----------------------------------------------------------------------------

    def reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        """Take up to ``count`` messages with ``basic_get``, first queue first."""
        deliveries: list[Delivery] = []
        if count <= 0:
            return deliveries
        with self._main.using() as channel:
            self._expire(channel)
            for queue in queues:
                amqp_queue = self._names.declare_queue(channel, queue, self._main.declared)
                while len(deliveries) < count:
                    method, properties, body = channel.basic_get(amqp_queue)
                    if method is None:
                        break
                    delivery = self._take(channel, queue, method, properties, body, lease)
                    if delivery is not None:
                        deliveries.append(delivery)
        self._pump.start()
        return deliveries

    def _take(
        self, channel: Any, queue: str, method: Any, properties: Any, body: bytes, lease: float
    ) -> Optional[Delivery]:
        message_id = properties.message_id or ""
        priority = tasks_priority(properties.priority)
        eta = header_float(properties.headers, ETA_HEADER)
        carried = carried_deliveries(properties.headers)
        if eta is not None and eta > self.now():
            # Came back early: by this host's clock, or a delay longer than the ladder.
            envelope = Envelope(message_id, queue, body, priority, eta)
            self._send(channel, envelope, body, eta, carried)
            channel.basic_ack(method.delivery_tag)
            return None
        held = self._leases.add(
            message_id,
            tag=method.delivery_tag,
            generation=self._main.generation,
            deadline=time.monotonic() + lease,
            queue=queue,
            priority=priority,
            body=body,
            redelivered=bool(method.redelivered),
            carried=carried,
        )
        return Delivery(message_id, queue, priority, body, False, held.deliveries, held.token)

    def _expire(self, channel: Any) -> None:
        """Requeue the deliveries whose lease ran out (back at their place in the queue)."""
        for lease in self._leases.expired(time.monotonic()):
            self._settle(channel, lease, ack=False)

    def _settle(self, channel: Any, held: Lease, *, ack: bool) -> None:
        """Ack, or reject with requeue, a delivery of the current channel. One of an
        older channel was requeued by the server when that channel closed."""
        if held.generation != self._main.generation:
            return
        if ack:
            channel.basic_ack(held.tag)
        else:
            channel.basic_reject(held.tag, requeue=True)

    # -- waiting ----------------------------------------------------------------------------

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a message is in one of ``queues`` or ``timeout`` passes.

        A consumer on a second connection (prefetch 1 per queue) is told of the first
        message, rejects it at once with requeue (it keeps its place) and returns: the
        caller's ``reserve`` then takes it. Returns early too when a lease held here is
        due to run out.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._main.lock:
            if self._leases and self._main.connection is not None:
                with self._main.using() as channel:
                    self._expire(channel)
            leases = self._leases.deadlines()
        if leases:
            deadline = min(deadline, min(leases))
        if not queues:
            time.sleep(max(0.0, deadline - time.monotonic()))
            return
        if not self._waiter.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return  # another thread waits on the same connection: that took the time
        try:
            with self._waiter.using() as channel:
                wait_for_message(
                    self._waiter.connection,
                    channel,
                    [self._names.declare_queue(channel, q, self._waiter.declared) for q in queues],
                    deadline,
                )
        finally:
            self._waiter.lock.release()

    # -- leases --------------------------------------------------------------------------------

    def extend(self, ids: Iterable[Held], lease: float) -> None:
        """Renew the lease time kept here. The server holds an unacked message for as
        long as this connection lives, so this only moves the time at which this
        transport itself gives the message back; it also answers heartbeats."""
        deadline = time.monotonic() + lease
        with self._main.lock:
            for given in ids:
                for held in self._leases.find(given):
                    held.deadline = deadline
        self._main.pump()

    def ack(self, message_ids: Sequence[Held]) -> list[str]:
        """Ack held deliveries. Ids not held here, or delivered on a connection that has
        closed since (the server requeued them), are ignored; given as deliveries, they
        are returned as refused (their lease is gone)."""
        check_id_list(message_ids)
        refused: list[str] = []
        if not message_ids:
            return refused
        with self._main.using() as channel:
            generation = self._main.generation
            for given in message_ids:
                leases = self._leases.take(given)
                if isinstance(given, Delivery) and not any(
                    lease.generation == generation for lease in leases or []
                ):
                    refused.append(given.id)
                for held in leases or []:
                    self._settle(channel, held, ack=True)
        return refused

    def release(
        self, message_id: Held, body: bytes | None = None, eta: float | None = None
    ) -> bool:
        """Give a held message back. Without ``body`` and ``eta`` it is rejected with
        requeue and keeps its place at the front. A new body or an ``eta`` is a new
        message (published with a confirm, then the old one acked): a new body without
        ``eta`` goes to the back of the queue, as RabbitMQ cannot put a new message in
        front. Not held here (or on a closed connection): nothing happens."""
        with self._main.using() as channel:
            generation = self._main.generation
            leases = [
                held
                for held in self._leases.take(message_id) or []
                if held.generation == generation
            ]
            if not leases:  # on a closed connection: RabbitMQ requeued it
                return not isinstance(message_id, Delivery)  # a lost lease is refused
            held, message_id = leases[0], lease_of(message_id)[0]
            # This delivery ended in a release: it no longer counts.
            if body is None and eta is None:
                self._leases.count(message_id, held.deliveries - 1)
                self._settle(channel, held, ack=False)
            else:
                envelope = Envelope(message_id, held.queue, held.body, held.priority, eta)
                new_body = held.body if body is None else body
                self._send(channel, envelope, new_body, eta, held.deliveries - 1)
                self._settle(channel, held, ack=True)
            for other in leases[1:]:
                self._settle(channel, other, ack=False)
        return True

    # -- dead letters ------------------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Publish the message to the dead-letter exchange with ``reason``, then ack it.
        A delivery of a connection that has closed since is left alone: the server
        requeued it, and it will be dead-lettered when it comes back."""
        with self._main.using() as channel:
            entries = self._leases.take(delivery.id) or []
            self._leases.forget(delivery.id)
            if entries and all(held.generation != self._main.generation for held in entries):
                return
            self._names.declare_dead(channel, self._main.declared)
            properties = self.pika.BasicProperties(
                message_id=delivery.id,
                priority=amqp_priority(delivery.priority),
                delivery_mode=2,
                headers={
                    QUEUE_HEADER: delivery.queue,
                    REASON_HEADER: reason,
                    FAILED_AT_HEADER: repr(self.now()),
                },
            )
            channel.basic_publish(self._names.dead, "", delivery.body, properties, mandatory=True)
            for held in entries:
                self._settle(channel, held, ack=True)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, read from the first
        :data:`~.amqp_dead.DEAD_LETTER_SCAN` in the dead-letter queue. While they are read they are
        invisible to other readers."""
        letters: list[DeadLetter] = []
        with Browse(self._main, self._names) as browse:
            for _tag, letter in browse:
                letters.append(letter)
        return letters[::-1][: max(0, limit)]

    def retry_dead_letter(self, message_id: str) -> bool:
        with self._main.using() as channel, Browse(self._main, self._names) as browse:
            for tag, letter in browse:
                if letter.id != message_id:
                    continue
                envelope = Envelope(letter.id, letter.queue, letter.body, letter.priority)
                self._send(channel, envelope, letter.body, None)
                browse.channel.basic_ack(tag)
                return True
        return False

    def delete_dead_letter(self, message_id: str) -> bool:
        return Browse(self._main, self._names).delete(message_id)

    # -- inspection --------------------------------------------------------------------------

    def queue_length(self, queue: str) -> int:
        """Ready messages in ``queue`` (the server's count; 0 for a queue never used)."""
        return self._probe(queue, purge=False)

    def purge(self, queue: str) -> int:
        return self._probe(queue, purge=True)

    def _probe(self, queue: str, *, purge: bool) -> int:
        return self._main.probe(self._names.queue(queue), purge=purge)
