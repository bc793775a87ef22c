"""The RabbitMQ objects an :class:`~flask_tasks.brokers.amqp.AMQPTransport` uses, and
how messages are laid out on them.

Everything is named ``<key_prefix>.<...>`` so that several apps (or test runs) share a
vhost without meeting:

``<prefix>.<queue>``
    A Flask-Tasks queue: a durable classic queue with ``x-max-priority`` 9 and the dead-
    letter exchange below. Messages are persistent and carry their id as ``message_id``.
``<prefix>.dead`` (fanout exchange and durable queue)
    Dead letters, with the reason and time in headers.
``<prefix>.delay.<k>`` (queue) and ``<prefix>.delay.x<k>`` (topic exchange), k = 0..31
    Delayed messages. Queue k holds messages for exactly 2**k ms (``x-message-ttl``)
    and then dead-letters them to exchange k-1. A delay of n ms is routed by the binary
    digits of n (the routing key ``b31.b30...b0``): exchange k sends a message whose
    digit k is 1 into queue k, and any other straight on to exchange k-1. Every queue
    holds one TTL, so the message at its head always expires first and nothing waits
    behind a longer delay. Exchange -1 is ``<prefix>.delay.ready``, a headers exchange
    that routes on the ``ft-queue`` header to the message's queue.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Optional

from .base import MAX_PRIORITY, Envelope

#: Levels of the delay ladder: 2**0 ms .. 2**31 ms, about 49.7 days in all. A longer delay
#: goes round again (the message comes back early, and the consumer sends it on).
DELAY_LEVELS = 32
LONGEST_DELAY_MS = 2**DELAY_LEVELS - 1

#: Headers the transport sets on messages.
QUEUE_HEADER = "ft-queue"
ETA_HEADER = "ft-eta"
REASON_HEADER = "ft-reason"
FAILED_AT_HEADER = "ft-failed-at"


def amqp_priority(priority: int) -> int:
    """RabbitMQ's priority for a Flask-Tasks one: 0 (first) becomes 9 (highest)."""
    return MAX_PRIORITY - priority


def tasks_priority(amqp: Optional[int]) -> int:
    """The Flask-Tasks priority of a RabbitMQ one (a message without one is lowest)."""
    return MAX_PRIORITY - min(MAX_PRIORITY, max(0, amqp or 0))


def delay_route(milliseconds: int) -> str:
    """The routing key that sends a message down the ladder for ``milliseconds``."""
    bits = f"{min(milliseconds, LONGEST_DELAY_MS):0{DELAY_LEVELS}b}"
    return ".".join(bits)


def delay_ms(eta: float, now: float) -> int:
    """Whole milliseconds from ``now`` to ``eta``, rounded up (never early)."""
    return max(0, math.ceil((eta - now) * 1000))


class Topology:
    """Names, arguments and declarations for one key prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.dead = f"{prefix}.dead"
        self.ready = f"{prefix}.delay.ready"
        self._queue_start = len(prefix) + 1

    def queue(self, name: str) -> str:
        """RabbitMQ's name of the Flask-Tasks queue ``name``."""
        return f"{self.prefix}.{name}"

    def tasks_queue(self, amqp_name: str) -> str:
        """The Flask-Tasks name of a RabbitMQ queue of this prefix."""
        return amqp_name[self._queue_start :]

    def delay_queue(self, level: int) -> str:
        return f"{self.prefix}.delay.{level}"

    def delay_exchange(self, level: int) -> str:
        return self.ready if level < 0 else f"{self.prefix}.delay.x{level}"

    def queue_arguments(self) -> dict[str, Any]:
        return {"x-max-priority": MAX_PRIORITY, "x-dead-letter-exchange": self.dead}

    # -- declaring (idempotent; ``declared`` remembers what this channel has done) ---------

    def declare_queue(self, channel: Any, name: str, declared: set[str]) -> str:
        """Declare the queue ``name`` (and the dead-letter and delivery exchanges it
        uses) unless done on this connection; return its RabbitMQ name."""
        amqp_name = self.queue(name)
        if amqp_name in declared:
            return amqp_name
        self.declare_dead(channel, declared)
        if self.ready not in declared:
            channel.exchange_declare(self.ready, "headers", durable=True)
            declared.add(self.ready)
        channel.queue_declare(amqp_name, durable=True, arguments=self.queue_arguments())
        channel.queue_bind(amqp_name, self.ready, arguments={"x-match": "all", QUEUE_HEADER: name})
        declared.add(amqp_name)
        return amqp_name

    def declare_dead(self, channel: Any, declared: set[str]) -> None:
        if self.dead in declared:
            return
        channel.exchange_declare(self.dead, "fanout", durable=True)
        channel.queue_declare(self.dead, durable=True)
        channel.queue_bind(self.dead, self.dead)
        declared.add(self.dead)

    def declare_delays(self, channel: Any, declared: set[str]) -> None:
        """Declare the delay ladder (once per connection)."""
        marker = f"{self.prefix}.delay"
        if marker in declared:
            return
        channel.exchange_declare(self.ready, "headers", durable=True)
        for level in range(DELAY_LEVELS):
            exchange, queue = self.delay_exchange(level), self.delay_queue(level)
            channel.exchange_declare(exchange, "topic", durable=True)
            channel.queue_declare(
                queue,
                durable=True,
                arguments={
                    "x-message-ttl": 2**level,
                    "x-dead-letter-exchange": self.delay_exchange(level - 1),
                },
            )
            position = DELAY_LEVELS - 1 - level
            before, after = "*." * position, ".*" * level
            channel.queue_bind(queue, exchange, routing_key=f"{before}1{after}")
            if level == 0:  # the ready exchange ignores routing keys: bind it for any
                channel.exchange_bind(self.ready, exchange, routing_key=f"{before}0{after}")
            else:
                channel.exchange_bind(
                    self.delay_exchange(level - 1), exchange, routing_key=f"{before}0{after}"
                )
        declared.update((marker, self.ready))

    def top_exchange(self) -> str:
        """Where a delayed message is published."""
        return self.delay_exchange(DELAY_LEVELS - 1)


def message_headers(envelope: Envelope, eta: Optional[float]) -> dict[str, Any]:
    headers: dict[str, Any] = {QUEUE_HEADER: envelope.queue}
    if eta is not None:
        headers[ETA_HEADER] = repr(eta)  # a string: AMQP tables carry no exact double
    return headers


def header_float(headers: Optional[dict[str, Any]], name: str) -> Optional[float]:
    """A float header written by :func:`message_headers`, or None."""
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def header_text(headers: Optional[dict[str, Any]], name: str) -> Optional[str]:
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def wait_for_message(
    connection: Any, channel: Any, amqp_queues: Sequence[str], deadline: float
) -> None:
    """Consume from ``amqp_queues`` until one message arrives (rejected straight back
    with requeue, so it keeps its place) or ``deadline`` (monotonic) passes."""
    arrived: list[bool] = []

    def on_message(channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        channel.basic_reject(method.delivery_tag, requeue=True)
        arrived.append(True)

    channel.basic_qos(prefetch_count=1)
    tags = [channel.basic_consume(queue, on_message) for queue in amqp_queues]
    try:
        while not arrived:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            connection.process_data_events(time_limit=remaining)
    finally:
        for tag in tags:
            channel.basic_cancel(tag)  # pika requeues what came after the first
