"""The leases an AMQP transport holds: its unacked deliveries, their tokens and deadlines,
and the delivery counts it can know.

A lease is one unacked delivery on the transport's connection. Its token is a random
name of the transport, the connection's generation and the delivery tag: nobody else can
settle a delivery of this connection, so the transport fences by comparing a given
token with those it holds.

Counting: RabbitMQ's classic queues tell only ``redelivered``, which ``wait``'s
look-ahead (a reject with requeue) sets on most messages, so the server cannot say how
often a message was delivered. What this transport knows it counts:

* a lease that runs out here is rejected with requeue (keeping its place); its count is
  remembered by message id, and the message counts one more when it comes back here;
* a message it publishes again (a release with a new body or ``eta``, a delay sent down
  the ladder again) carries the count in the :data:`DELIVERIES_HEADER` header.

A message whose holder's connection closed (a worker that died with it) is requeued by
RabbitMQ itself, and is not counted.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

from .base import Delivery, Held, lease_of

#: The deliveries counted before a message was published again by this transport.
DELIVERIES_HEADER = "ft-deliveries"
#: Most counts kept for leases that ran out here and have not come back (another
#: process took them): the oldest are forgotten first.
MAX_REMEMBERED = 10_000


@dataclass
class Lease:
    """One unacked delivery of a message."""

    tag: int
    generation: int
    #: ``time.monotonic()`` at which this transport gives it back.
    deadline: float
    queue: str
    priority: int
    body: bytes
    token: str
    deliveries: int


def carried_deliveries(headers: Optional[dict[str, Any]]) -> int:
    """The count a message carries in :data:`DELIVERIES_HEADER` (0: none, or unreadable)."""
    value = (headers or {}).get(DELIVERIES_HEADER)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Leases:
    """The leases of one transport, by message id (an id may be held twice: RabbitMQ
    keeps two messages published under one id). Not thread-safe: the transport's
    connection lock guards it."""

    def __init__(self) -> None:
        self._name = secrets.token_hex(6)
        self._held: dict[str, list[Lease]] = {}
        #: message id -> deliveries counted when its lease ran out (or was released) here.
        self._counted: OrderedDict[str, int] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._held)

    def add(
        self,
        message_id: str,
        *,
        tag: int,
        generation: int,
        deadline: float,
        queue: str,
        priority: int,
        body: bytes,
        redelivered: bool,
        carried: int,
    ) -> Lease:
        """Hold a delivery just taken; ``carried``: the count its headers carry."""
        counted = self._counted.pop(message_id, None)
        # A message published since (not redelivered) starts from what it carries.
        previous = counted if redelivered and counted is not None else carried
        lease = Lease(
            tag,
            generation,
            deadline,
            queue,
            priority,
            body,
            f"{self._name}.{generation}.{tag}",
            previous + 1,
        )
        self._held.setdefault(message_id, []).append(lease)
        return lease

    def take(self, held: Held) -> Optional[list[Lease]]:
        """Stop holding ``held``: every lease of a bare id (maybe none), or the one lease
        of a :class:`Delivery`'s token; None when that token is not held (refused)."""
        message_id, token = lease_of(held)
        leases = self._held.pop(message_id, [])
        if not isinstance(held, Delivery):
            return leases
        mine = [lease for lease in leases if lease.token == token]
        others = [lease for lease in leases if lease.token != token]
        if others:
            self._held[message_id] = others
        return mine or None

    def find(self, held: Held) -> list[Lease]:
        """The leases ``held`` names (its token's, or all of a bare id), still held."""
        message_id, token = lease_of(held)
        leases = self._held.get(message_id, [])
        if isinstance(held, Delivery):
            return [lease for lease in leases if lease.token == token]
        return leases

    def expired(self, now: float) -> list[Lease]:
        """Stop holding the leases whose deadline is past, in the order they were
        delivered; each counts when its message comes back."""
        expired: list[tuple[str, Lease]] = []
        for message_id, leases in list(self._held.items()):
            kept = [lease for lease in leases if lease.deadline > now]
            expired.extend((message_id, lease) for lease in leases if lease.deadline <= now)
            if kept:
                self._held[message_id] = kept
            else:
                del self._held[message_id]
        expired.sort(key=lambda pair: pair[1].tag)
        for message_id, lease in expired:
            self.count(message_id, lease.deliveries)
        return [lease for _id, lease in expired]

    def count(self, message_id: str, deliveries: int) -> None:
        """Remember that ``message_id`` was delivered ``deliveries`` times when it went
        back to its queue (a lease that ran out, or a release: one less)."""
        self._counted[message_id] = deliveries
        self._counted.move_to_end(message_id)
        while len(self._counted) > MAX_REMEMBERED:
            self._counted.popitem(last=False)

    def forget(self, message_id: str) -> None:
        """Drop the count of ``message_id`` (published again, or dead-lettered)."""
        self._counted.pop(message_id, None)

    def deadlines(self) -> list[float]:
        return [lease.deadline for leases in self._held.values() for lease in leases]
