"""The broker interface: storage and transport of opaque messages and result records.

A broker moves bytes and ids. It never imports user code and never knows the serializer:
the core hands it encoded message bodies and encoded result records, and gets them back.

Every broker (memory, SQLite, Redis) passes the same conformance suite in ``tests/brokers``.
Every method that changes more than one thing does so atomically: a crash leaves either the
state before or the state after, never half of it.

Vocabulary
----------
queue
    A named FIFO of ready messages, split by priority 0 (first) to 9 (last).
delayed
    A message published with an ``eta`` in the future waits outside every queue and is
    moved to its queue once due (by ``reserve``, which promotes due messages first).
lease
    A reserved message is held by one consumer until it is acked, released or
    dead-lettered. If its lease runs out first (the consumer died), the next ``reserve``
    by anyone puts it back at the front of its queue. Live consumers renew leases with
    ``extend``.
result record
    Opaque bytes stored under a task id with a time to live. Every write publishes a
    notification so that ``watch_result`` wakes at once.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

#: Priorities run from 0 (highest) to 9 (lowest), as in the public task API.
MIN_PRIORITY = 0
MAX_PRIORITY = 9


@dataclass(frozen=True)
class Envelope:
    """A message to publish: where it goes and its encoded body."""

    id: str
    queue: str
    body: bytes
    priority: int = 5
    #: Unix time before which the message must not be delivered (None: ready now).
    eta: Optional[float] = None


def check_envelope(envelope: Envelope) -> None:
    """Raise ValueError for a priority outside 0..9 or an empty queue name; brokers call
    it for every envelope before storing any."""
    if not MIN_PRIORITY <= envelope.priority <= MAX_PRIORITY:
        raise ValueError(
            f"Message {envelope.id!r} has priority {envelope.priority!r}; "
            f"priorities run from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    if not envelope.queue:
        raise ValueError(f"Message {envelope.id!r} names no queue")


@dataclass(frozen=True)
class Delivery:
    """A reserved message, held under a lease until acked, released or dead-lettered."""

    id: str
    queue: str
    priority: int
    body: bytes
    #: The id was marked revoked (``revoke``) when the message was reserved, so the
    #: consumer need not ask ``revoked`` in another round trip.
    revoked: bool = False


@dataclass(frozen=True)
class DeadLetter:
    """A message the workers could not process, kept with the reason."""

    id: str
    queue: str
    priority: int
    body: bytes
    reason: str
    #: Unix time it was dead-lettered.
    failed_at: float


class Broker(ABC):
    """Storage and transport for one app: queues, leases, results, revocations.

    Implementations are safe to share between threads of one process. They are not
    shared across ``fork()``: each process opens its own (see ``Tasks`` state handling).
    Methods raise :class:`flask_tasks.exceptions.OperationalError` when the store cannot
    be reached, with the URL (password hidden) in the message.
    """

    #: The URL this broker was opened with, password hidden. Safe to print.
    url: str

    #: Short human name for banners ("redis", "sqlite", "memory").
    kind: str

    # -- publishing -----------------------------------------------------------------------

    @abstractmethod
    def publish(
        self,
        envelopes: Sequence[Envelope],
        records: Mapping[str, bytes] | None = None,
        record_ttl: float = 0,
    ) -> None:
        """Store ``envelopes`` and, in the same atomic step, the result records in
        ``records`` (task id -> record; used to record PENDING at publish time).

        A message with an ``eta`` in the future is delayed; any other goes to the back of
        its queue at its priority. Publishing an id that is already stored replaces the
        stored message (its body, queue and timing). Wakes consumers waiting on the queue.
        """

    # -- consuming ------------------------------------------------------------------------

    @abstractmethod
    def reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        """Take up to ``count`` ready messages and lease them for ``lease`` seconds.

        First moves due delayed messages to their queues and messages whose lease ran
        out back to the front of theirs (a bounded batch each call, never the whole
        store). Then takes messages from ``queues`` in the order given (the first queue
        has precedence), within a queue by priority (0 first), then oldest first.
        Never hands the same message to two consumers while its lease runs. Each
        delivery says whether its id is marked revoked (``Delivery.revoked``).
        """

    @abstractmethod
    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block for up to ``timeout`` seconds, returning early when work may be ready
        in ``queues`` (a publish, or a delayed message falling due). May return early
        for no reason; callers reserve and wait again. Never busy-polls."""

    @abstractmethod
    def extend(self, ids: Iterable[str], lease: float) -> None:
        """Renew the leases of held messages to ``lease`` seconds from now. Ids that
        are no longer held are ignored."""

    @abstractmethod
    def ack(
        self,
        message_id: str,
        record: bytes | None = None,
        record_ttl: float = 0,
    ) -> None:
        """Forget a delivered message. If ``record`` is given, store it as the task's
        result record in the same atomic step (and notify watchers)."""

    def ack_many(self, acks: Sequence[tuple[str, bytes | None, float]]) -> None:
        """Ack several messages, each ``(message_id, record, record_ttl)`` exactly as
        :meth:`ack` would (each atomic on its own), in as few round trips as the store
        allows. Workers use it to pipeline the outcomes of prefetched tasks."""
        for message_id, record, record_ttl in acks:
            self.ack(message_id, record, record_ttl)

    @abstractmethod
    def release(
        self,
        message_id: str,
        body: bytes | None = None,
        eta: float | None = None,
        record: bytes | None = None,
        record_ttl: float = 0,
    ) -> None:
        """Return a held message for delivery again, atomically with an optional new
        ``body`` and result ``record``. Without ``eta`` it goes to the front of its queue
        (a warm shutdown returning prefetched work); with ``eta`` it is delayed until
        then (a retry). Releasing a message the broker no longer holds (acked, or
        never delivered) is a no-op: publish it again instead."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Drop the lease of ``delivery`` and keep it in the dead-letter store with
        ``reason``. Never raises for bad content: the body is stored as is."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""

    @abstractmethod
    def retry_dead_letter(self, message_id: str) -> bool:
        """Move a dead letter back to the back of its queue. False if there is none."""

    # -- results --------------------------------------------------------------------------

    @abstractmethod
    def set_result(self, task_id: str, record: bytes, ttl: float) -> None:
        """Store a result record for ``ttl`` seconds (0 = forever) and notify watchers."""

    @abstractmethod
    def get_result(self, task_id: str) -> bytes | None:
        """The stored result record, or None if there is none (never sent, forgotten or
        expired)."""

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """Several records in one call, in the order of ``task_ids``."""
        return [self.get_result(task_id) for task_id in task_ids]

    @abstractmethod
    def forget_result(self, task_id: str) -> None:
        """Delete the result record."""

    @abstractmethod
    def watch_result(self, task_id: str, last: bytes | None, timeout: float) -> bytes | None:
        """Return the current record as soon as it differs from ``last`` (at once if it
        already does), or after ``timeout`` seconds whatever it is. Woken by writes,
        not by polling on a fixed interval."""

    # -- revocation -----------------------------------------------------------------------

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], ttl: float) -> None:
        """Mark tasks revoked for ``ttl`` seconds; workers skip them."""

    @abstractmethod
    def revoked(self, task_ids: Sequence[str]) -> set[str]:
        """Those of ``task_ids`` that are marked revoked."""

    # -- counters (chords) ----------------------------------------------------------------

    @abstractmethod
    def incr(self, key: str, ttl: float) -> int:
        """Atomically add one to the counter ``key`` (created at 0, expiring after
        ``ttl`` seconds) and return the new value."""

    # -- inspection and administration ----------------------------------------------------

    @abstractmethod
    def queue_length(self, queue: str) -> int:
        """Number of ready messages in ``queue`` (not delayed, not leased)."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Drop the ready messages of ``queue``; returns how many."""

    def ping(self) -> None:
        """Raise OperationalError unless the store answers."""
        self.queue_length("__ping__")

    def close(self) -> None:
        """Release connections and files. The broker may not be used afterwards."""

    # -- helpers for implementations ------------------------------------------------------

    @staticmethod
    def now() -> float:
        """Current Unix time; the single clock every broker uses."""
        return time.time()
