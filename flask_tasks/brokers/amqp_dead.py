"""Reading RabbitMQ's dead-letter queue: each letter with its reason, put back after."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from .amqp_link import Link
from .amqp_topology import (
    FAILED_AT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    Topology,
    header_float,
    header_text,
    tasks_priority,
)
from .base import DeadLetter

logger = logging.getLogger("flask_tasks.amqp")

#: ``dead_letters`` and ``retry_dead_letter`` read at most this many dead letters.
DEAD_LETTER_SCAN = 10_000


class Browse:
    """Read the dead-letter queue on a channel of its own (``with``, then iterate:
    ``(delivery tag, letter)`` oldest first); closing the channel puts back every message
    not acked, in order."""

    def __init__(self, link: Link, names: Topology) -> None:
        self.link = link
        self.names = names
        self.channel: Any = None

    def __enter__(self) -> Browse:
        with self.link.using() as channel:
            self.names.declare_dead(channel, self.link.declared)
            self.channel = self.link.connection.channel()
        return self

    def __iter__(self) -> Iterator[tuple[int, DeadLetter]]:
        for _ in range(DEAD_LETTER_SCAN):
            with self.link.using():
                method, properties, body = self.channel.basic_get(self.names.dead)
            if method is None:
                return
            yield method.delivery_tag, _letter(properties, body, self.names)

    def delete(self, message_id: str) -> bool:
        """Ack (drop) the dead letter ``message_id``; False if none is found."""
        with self:
            for tag, letter in self:
                if letter.id == message_id:
                    with self.link.using():
                        self.channel.basic_ack(tag)
                    return True
        return False

    def __exit__(self, *_exc: object) -> None:
        with self.link.lock:
            if self.channel is not None and self.channel.is_open:
                try:
                    self.channel.close()
                except Exception as error:  # the connection is gone: so are the holds
                    logger.debug("closing the dead-letter channel: %s", error)


def _letter(properties: Any, body: bytes, names: Topology) -> DeadLetter:
    headers = properties.headers or {}
    queue = header_text(headers, QUEUE_HEADER)
    reason = header_text(headers, REASON_HEADER)
    failed_at = header_float(headers, FAILED_AT_HEADER)
    if reason is None:  # dead-lettered by RabbitMQ itself (rejected, expired...)
        deaths = headers.get("x-death") or [{}]
        death = deaths[0]
        reason = f"RabbitMQ: {header_text(death, 'reason') or 'dead-lettered'}"
        if queue is None and header_text(death, "queue"):
            queue = names.tasks_queue(str(header_text(death, "queue")))
        when = death.get("time")
        failed_at = when.timestamp() if hasattr(when, "timestamp") else failed_at
    return DeadLetter(
        properties.message_id or "",
        queue or "",
        tasks_priority(properties.priority),
        body,
        reason,
        failed_at if failed_at is not None else 0.0,
    )
