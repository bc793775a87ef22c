"""``memory://``: a transport and store inside one process, for tests and scripts.

Everything lives in dictionaries guarded by one lock; a condition variable wakes waiting
consumers and result watchers. Stale heap and queue entries are skipped lazily (each
carries the generation of the message it was made for), so no operation scans a queue.
The store part (records, revocations, counters, claims, heartbeats) is
:mod:`.memory_store`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .base import (
    MAX_PRIORITY,
    Broker,
    DeadLetter,
    Delivery,
    Envelope,
    Held,
    QueueCounts,
    Settlement,
    check_envelope,
    lease_of,
)
from .memory_store import MemoryStore

_PROMOTE_BATCH = 1000


@dataclass
class _Stored:
    queue: str
    priority: int
    body: bytes
    generation: int


class MemoryBroker(MemoryStore, Broker):
    """A transport and store in this process's memory; the store part is
    :class:`.MemoryStore`, and one lock guards both."""

    kind = "memory"

    def __init__(self, url: str = "memory://", **options: object) -> None:
        super().__init__(url, **options)
        self._generations = itertools.count(1)
        self._messages: dict[str, _Stored] = {}
        self._queues: dict[str, list[deque[tuple[str, int]]]] = {}
        self._delayed: list[tuple[float, int, str]] = []
        self._leases: dict[str, float] = {}
        self._lease_heap: list[tuple[float, int, str]] = []
        self._dead: dict[str, DeadLetter] = {}
        #: id -> unsettled reservations, and the token of the latest (fencing).
        self._deliveries: dict[str, int] = {}
        self._tokens: dict[str, str] = {}

    # -- internal helpers (lock held) -----------------------------------------------------

    def _buckets(self, queue: str) -> list[deque[tuple[str, int]]]:
        buckets = self._queues.get(queue)
        if buckets is None:
            buckets = self._queues[queue] = [deque() for _ in range(MAX_PRIORITY + 1)]
        return buckets

    def _forget_leases(self, message_id: str) -> None:
        self._leases.pop(message_id, None)
        self._deliveries.pop(message_id, None)
        self._tokens.pop(message_id, None)

    def _holds(self, held: Held) -> bool:
        """False for a delivery whose lease was taken over or settled meanwhile."""
        message_id, token = lease_of(held)
        return not token or self._tokens.get(message_id) == token

    def _store(self, envelope: Envelope, now: float) -> None:
        self._forget_leases(envelope.id)
        stored = _Stored(envelope.queue, envelope.priority, envelope.body, next(self._generations))
        self._messages[envelope.id] = stored
        if envelope.eta is not None and envelope.eta > now:
            heapq.heappush(self._delayed, (envelope.eta, stored.generation, envelope.id))
        else:
            self._buckets(stored.queue)[stored.priority].append((envelope.id, stored.generation))

    def _put_back(self, message_id: str, front: bool) -> None:
        stored = self._messages[message_id]
        stored.generation = next(self._generations)
        bucket = self._buckets(stored.queue)[stored.priority]
        entry = (message_id, stored.generation)
        bucket.appendleft(entry) if front else bucket.append(entry)

    def _is_current(self, message_id: str, generation: int) -> bool:
        stored = self._messages.get(message_id)
        return stored is not None and stored.generation == generation

    def _promote(self, now: float) -> None:
        for _ in range(_PROMOTE_BATCH):
            if not self._delayed or self._delayed[0][0] > now:
                break
            _eta, generation, message_id = heapq.heappop(self._delayed)
            if self._is_current(message_id, generation) and message_id not in self._leases:
                self._put_back(message_id, front=False)
        expired: list[str] = []
        for _ in range(_PROMOTE_BATCH):
            if not self._lease_heap or self._lease_heap[0][0] > now:
                break
            deadline, _seq, message_id = heapq.heappop(self._lease_heap)
            if self._leases.get(message_id) == deadline:
                del self._leases[message_id]
                expired.append(message_id)
        # In reverse, so that the first leased ends up first: each goes in front of the last.
        for message_id in reversed(expired):
            self._put_back(message_id, front=True)
        self._sweep(now)

    def _lease(self, message_id: str, deadline: float) -> None:
        self._leases[message_id] = deadline
        heapq.heappush(self._lease_heap, (deadline, next(self._generations), message_id))

    def _pop_ready(self, queue: str) -> str | None:
        for bucket in self._queues.get(queue, ()):
            while bucket:
                message_id, generation = bucket.popleft()
                if self._is_current(message_id, generation) and message_id not in self._leases:
                    return message_id
        return None

    # -- publishing -----------------------------------------------------------------------

    def publish_with_records(
        self, envelopes: Sequence[Envelope], records: Mapping[str, bytes], record_ttl: float
    ) -> None:
        for envelope in envelopes:  # all checked before anything is stored
            check_envelope(envelope)
        with self._lock:
            now = self.now()
            for task_id, record in records.items():
                self._write_result(task_id, record, record_ttl, now)
            for envelope in envelopes:
                self._store(envelope, now)
            self._changed.notify_all()

    # -- consuming ------------------------------------------------------------------------

    def reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        with self._lock:
            now = self.now()
            self._promote(now)
            taken: list[Delivery] = []
            for queue in queues:
                while len(taken) < count:
                    message_id = self._pop_ready(queue)
                    if message_id is None:
                        break
                    stored = self._messages[message_id]
                    self._lease(message_id, now + lease)
                    revoked = self._revoked.get(message_id, 0) > now
                    times = self._deliveries[message_id] = self._deliveries.get(message_id, 0) + 1
                    token = self._tokens[message_id] = str(next(self._generations))
                    taken.append(
                        Delivery(
                            message_id,
                            stored.queue,
                            stored.priority,
                            stored.body,
                            revoked,
                            times,
                            token,
                        )
                    )
            return taken

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        with self._lock:
            # A delayed message falling due, or a lease running out, may make work ready.
            for heap in (self._delayed, self._lease_heap):
                if heap:
                    timeout = min(timeout, max(0.0, heap[0][0] - self.now()))
            if any(any(bucket) for queue in queues for bucket in self._queues.get(queue, ())):
                return
            self._changed.wait(timeout)

    def extend(self, ids: Iterable[Held], lease: float) -> None:
        with self._lock:
            deadline = self.now() + lease
            for held in ids:
                message_id, _token = lease_of(held)
                if message_id in self._leases and self._holds(held):
                    self._lease(message_id, deadline)

    def ack_with_records(self, settlements: Sequence[Settlement], record_ttl: float) -> list[str]:
        refused = []
        with self._lock:
            now = self.now()
            for held, record in settlements:
                message_id, _token = lease_of(held)
                if not self._holds(held):
                    refused.append(message_id)
                    continue
                self._forget_leases(message_id)
                self._messages.pop(message_id, None)
                if record is not None:
                    self._write_result(message_id, record, record_ttl, now)
        return refused

    def release_with_record(
        self,
        message_id: Held,
        body: bytes | None,
        eta: float | None,
        record: bytes | None,
        record_ttl: float,
    ) -> bool:
        fenced = message_id
        message_id, _token = lease_of(fenced)
        with self._lock:
            if not self._holds(fenced):
                return False
            now = self.now()
            stored = self._messages.get(message_id)
            deliveries = self._deliveries.get(message_id, 0)
            held = self._leases.pop(message_id, None) is not None
            if stored is not None and (held or body is not None):
                envelope = Envelope(
                    message_id,
                    stored.queue,
                    body if body is not None else stored.body,
                    stored.priority,
                    eta,
                )
                if eta is None:
                    self._messages[message_id] = _Stored(
                        envelope.queue, envelope.priority, envelope.body, 0
                    )
                    self._put_back(message_id, front=True)
                else:
                    self._store(envelope, now)
                # This delivery ended in a release: it no longer counts.
                self._tokens.pop(message_id, None)
                if deliveries > 1:
                    self._deliveries[message_id] = deliveries - 1
                else:
                    self._deliveries.pop(message_id, None)
            if record is not None:
                self._write_result(message_id, record, record_ttl, now)
            self._changed.notify_all()
        return True

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self._lock:
            self._forget_leases(delivery.id)
            self._messages.pop(delivery.id, None)
            self._dead[delivery.id] = DeadLetter(
                delivery.id, delivery.queue, delivery.priority, delivery.body, reason, self.now()
            )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            letters = sorted(self._dead.values(), key=lambda letter: letter.failed_at)
            return letters[::-1][:limit]

    def retry_dead_letter(self, message_id: str) -> bool:
        with self._lock:
            letter = self._dead.pop(message_id, None)
            if letter is None:
                return False
            envelope = Envelope(letter.id, letter.queue, letter.body, letter.priority)
            self._store(envelope, self.now())
            self._changed.notify_all()
            return True

    def delete_dead_letter(self, message_id: str) -> bool:
        with self._lock:
            return self._dead.pop(message_id, None) is not None

    # -- inspection -----------------------------------------------------------------------

    def held(self, message_ids: Sequence[str]) -> set[str]:
        with self._lock:
            return {message_id for message_id in message_ids if message_id in self._leases}

    def queue_length(self, queue: str) -> int:
        with self._lock:
            return sum(
                1
                for bucket in self._queues.get(queue, ())
                for message_id, generation in bucket
                if self._is_current(message_id, generation) and message_id not in self._leases
            )

    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        ready = {queue: self.queue_length(queue) for queue in queues}
        delayed = dict.fromkeys(queues, 0)
        reserved = dict.fromkeys(queues, 0)
        with self._lock:
            for _eta, generation, message_id in self._delayed:
                stored = self._messages.get(message_id)
                if stored is None or stored.generation != generation:
                    continue  # a stale heap entry
                if stored.queue in delayed and message_id not in self._leases:
                    delayed[stored.queue] += 1
            for message_id in self._leases:
                stored = self._messages.get(message_id)
                if stored is not None and stored.queue in reserved:
                    reserved[stored.queue] += 1
        return {
            queue: QueueCounts(ready[queue], delayed[queue], reserved[queue]) for queue in queues
        }

    def purge(self, queue: str) -> int:
        with self._lock:
            dropped = 0
            for bucket in self._queues.pop(queue, ()):
                for message_id, generation in bucket:
                    if self._is_current(message_id, generation) and message_id not in self._leases:
                        del self._messages[message_id]
                        dropped += 1
            return dropped
