"""``memory://``: a broker inside one process, for tests and scripts.

Everything lives in dictionaries guarded by one lock; a condition variable wakes waiting
consumers and result watchers. Stale heap and queue entries are skipped lazily (each
carries the generation of the message it was made for), so no operation scans a queue.
Expired results, revocations and counters are dropped in bounded batches as time passes.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .base import MAX_PRIORITY, Broker, DeadLetter, Delivery, Envelope, check_envelope

_PROMOTE_BATCH = 1000


@dataclass
class _Stored:
    queue: str
    priority: int
    body: bytes
    generation: int


class MemoryBroker(Broker):
    """A broker whose store is this process's memory."""

    kind = "memory"

    def __init__(self, url: str = "memory://", **_options: object) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._generations = itertools.count(1)
        self._messages: dict[str, _Stored] = {}
        self._queues: dict[str, list[deque[tuple[str, int]]]] = {}
        self._delayed: list[tuple[float, int, str]] = []
        self._leases: dict[str, float] = {}
        self._lease_heap: list[tuple[float, int, str]] = []
        self._results: dict[str, tuple[bytes, float | None]] = {}
        self._revoked: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._dead: dict[str, DeadLetter] = {}
        #: (expires_at, table, key) for results, revocations and counters with a ttl.
        self._expiries: list[tuple[float, str, str]] = []

    # -- internal helpers (lock held) -----------------------------------------------------

    def _buckets(self, queue: str) -> list[deque[tuple[str, int]]]:
        buckets = self._queues.get(queue)
        if buckets is None:
            buckets = self._queues[queue] = [deque() for _ in range(MAX_PRIORITY + 1)]
        return buckets

    def _store(self, envelope: Envelope, now: float) -> None:
        self._leases.pop(envelope.id, None)
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

    def _expire_later(self, table: str, key: str, expires_at: float | None) -> None:
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, table, key))

    def _sweep(self, now: float) -> None:
        """Drop a bounded batch of expired results, revocations and counters."""
        for _ in range(_PROMOTE_BATCH):
            if not self._expiries or self._expiries[0][0] > now:
                break
            expires_at, table, key = heapq.heappop(self._expiries)
            # Only if not written again since: a later write pushed its own entry.
            if table == "results" and self._results.get(key, (b"", None))[1] == expires_at:
                del self._results[key]
            elif table == "revoked" and self._revoked.get(key) == expires_at:
                del self._revoked[key]
            elif table == "counters" and self._counters.get(key, (0, None))[1] == expires_at:
                del self._counters[key]

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

    def _write_result(self, task_id: str, record: bytes, ttl: float, now: float) -> None:
        expires_at = now + ttl if ttl else None
        self._results[task_id] = (record, expires_at)
        self._expire_later("results", task_id, expires_at)
        self._sweep(now)
        self._changed.notify_all()

    def _read_result(self, task_id: str, now: float) -> bytes | None:
        entry = self._results.get(task_id)
        if entry is None:
            return None
        record, expires_at = entry
        if expires_at is not None and expires_at <= now:
            del self._results[task_id]
            return None
        return record

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self,
        envelopes: Sequence[Envelope],
        records: Mapping[str, bytes] | None = None,
        record_ttl: float = 0,
    ) -> None:
        for envelope in envelopes:  # all checked before anything is stored
            check_envelope(envelope)
        with self._lock:
            now = self.now()
            for task_id, record in (records or {}).items():
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
                    taken.append(
                        Delivery(message_id, stored.queue, stored.priority, stored.body, revoked)
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

    def extend(self, ids: Iterable[str], lease: float) -> None:
        with self._lock:
            deadline = self.now() + lease
            for message_id in ids:
                if message_id in self._leases:
                    self._lease(message_id, deadline)

    def ack(self, message_id: str, record: bytes | None = None, record_ttl: float = 0) -> None:
        with self._lock:
            self._leases.pop(message_id, None)
            self._messages.pop(message_id, None)
            if record is not None:
                self._write_result(message_id, record, record_ttl, self.now())

    def release(
        self,
        message_id: str,
        body: bytes | None = None,
        eta: float | None = None,
        record: bytes | None = None,
        record_ttl: float = 0,
    ) -> None:
        with self._lock:
            now = self.now()
            stored = self._messages.get(message_id)
            held = self._leases.pop(message_id, None) is not None
            if stored is not None and (held or body is not None):
                envelope = Envelope(
                    message_id, stored.queue, body if body is not None else stored.body,
                    stored.priority, eta,
                )
                if eta is None:
                    self._messages[message_id] = _Stored(
                        envelope.queue, envelope.priority, envelope.body, 0
                    )
                    self._put_back(message_id, front=True)
                else:
                    self._store(envelope, now)
            if record is not None:
                self._write_result(message_id, record, record_ttl, now)
            self._changed.notify_all()

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self._lock:
            self._leases.pop(delivery.id, None)
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

    # -- results --------------------------------------------------------------------------

    def set_result(self, task_id: str, record: bytes, ttl: float) -> None:
        with self._lock:
            self._write_result(task_id, record, ttl, self.now())

    def get_result(self, task_id: str) -> bytes | None:
        with self._lock:
            return self._read_result(task_id, self.now())

    def forget_result(self, task_id: str) -> None:
        with self._lock:
            self._results.pop(task_id, None)
            self._changed.notify_all()

    def watch_result(self, task_id: str, last: bytes | None, timeout: float) -> bytes | None:
        with self._lock:
            deadline = self.now() + timeout
            while True:
                current = self._read_result(task_id, self.now())
                remaining = deadline - self.now()
                if current != last or remaining <= 0:
                    return current
                self._changed.wait(remaining)

    # -- revocation -----------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], ttl: float) -> None:
        with self._lock:
            now = self.now()
            for task_id in task_ids:
                self._revoked[task_id] = now + ttl
                self._expire_later("revoked", task_id, now + ttl)
            self._sweep(now)

    def revoked(self, task_ids: Sequence[str]) -> set[str]:
        with self._lock:
            now = self.now()
            return {tid for tid in task_ids if self._revoked.get(tid, 0) > now}

    def incr(self, key: str, ttl: float) -> int:
        with self._lock:
            now = self.now()
            value, expires_at = self._counters.get(key, (0, now + ttl))
            if expires_at <= now:
                value = 0
            self._counters[key] = (value + 1, now + ttl)
            self._expire_later("counters", key, now + ttl)
            return value + 1

    # -- inspection -----------------------------------------------------------------------

    def queue_length(self, queue: str) -> int:
        with self._lock:
            return sum(
                1
                for bucket in self._queues.get(queue, ())
                for message_id, generation in bucket
                if self._is_current(message_id, generation) and message_id not in self._leases
            )

    def purge(self, queue: str) -> int:
        with self._lock:
            dropped = 0
            for bucket in self._queues.pop(queue, ()):
                for message_id, generation in bucket:
                    if self._is_current(message_id, generation) and message_id not in self._leases:
                        del self._messages[message_id]
                        dropped += 1
            return dropped
