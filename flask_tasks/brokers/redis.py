"""``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``: the production broker.

Every change that touches more than one key is one Lua script (``lua/*.lua``, one file per
command, loaded once per client and run with EVALSHA). Key names live in
:mod:`.redis_keys`, script loading in :mod:`.redis_scripts`, connection handling in
:mod:`.redis_connection`, pub/sub waiting in :mod:`.redis_pubsub`, and the store part
(records, revocations, counters, claims, heartbeats) in :mod:`.redis_store`. No operation looks at
more than a bounded batch of a queue, except ``purge``, which is linear in what it drops.
Needs Redis 5.0 or newer; ``docs/broker-redis.rst`` describes the design.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional, cast

from ..exceptions import OperationalError
from .base import (
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
from .redis_bulk import publish_many_call
from .redis_reserve import ReserveCalls
from .redis_scripts import ScriptCall
from .redis_store import RedisStore, milliseconds
from .redis_store import operational as _operational
from .redis_wake import Waker

#: Most list entries one ``purge`` script pops before yielding the server.
PURGE_BATCH = 5000
#: Ids read per round trip when ``queue_counts`` counts delayed and leased messages.
COUNT_CHUNK = 1000
#: Dead letters kept; the oldest beyond this are dropped.
DEAD_LETTER_LIMIT = 10_000
#: Attempts for the read-then-script operations when a message moves queue meanwhile.
_RACE_ATTEMPTS = 5
#: Most ids whose queue ``reserve`` remembers so that ``release`` need not read it first.
_QUEUE_HINTS = 65_536


class RedisBroker(RedisStore, Broker):
    """A transport and store kept in Redis 5.0+; see ``docs/broker-redis.rst``.

    The store part (records, revocations, counters, claims, heartbeats) is
    :class:`.RedisStore`. ``options`` are redis-py client arguments (``socket_timeout``,
    ``ssl_ca_certs``...), plus ``dead_letter_limit`` (default 10,000) and
    ``records_db``: the database of this server holding the records and revocations, when
    the app keeps them apart (``TASKS_RESULT_BACKEND`` on the same server). Then the joint
    steps write records there (``SELECT`` inside their script: still one atomic round
    trip), ``reserve`` flags revocations from there, and this broker's own store methods
    are not used (:class:`.Connections` opens the store on its database).
    """

    kind = "redis"
    wait_sees_earlier_work = True

    def __init__(self, url: str, *, key_prefix: str = "flask_tasks", **options: Any) -> None:
        self.dead_letter_limit = int(options.pop("dead_letter_limit", DEAD_LETTER_LIMIT))
        records_db = options.pop("records_db", None)
        super().__init__(url, key_prefix=key_prefix, **options)
        own_db = int(self._client.connection_pool.connection_kwargs.get("db") or 0)
        #: "records_db:own_db" for the scripts, or "" when records live in this database.
        self._records_db = (
            "" if records_db is None or int(records_db) == own_db else f"{records_db}:{own_db}"
        )
        self._waker = Waker(self._client, self.keys)
        # id -> queue of messages this broker handed out: a hint, checked by release.lua.
        self._queue_hints: dict[str, str] = {}
        self._reserve = ReserveCalls(self._client, self._scripts, self.keys, self._records_db)

    # -- publishing -----------------------------------------------------------------------

    @_operational
    def publish_with_records(
        self, envelopes: Sequence[Envelope], records: Mapping[str, bytes], record_ttl: float
    ) -> None:
        if not envelopes and not records:
            return
        if len(envelopes) == 1 and self._publish_one(envelopes[0], records, record_ttl):
            return
        now = self.now()
        ttl = milliseconds(record_ttl)
        many = publish_many_call(self.keys, envelopes, records, ttl, self._records_db, now)
        if many is not None:  # a group: one script call with each ready list once
            self._scripts.call(self._client, self._scripts.publish_many, *many)
            return
        keys = self.keys.core()
        wake_lists = []
        fresh = all(envelope.fresh for envelope in envelopes)
        args: list[Any] = [
            len(envelopes),
            milliseconds(record_ttl),
            self._records_db,
            "1" if fresh else "",
        ]
        for envelope in envelopes:
            check_envelope(envelope)
            keys.append(self.keys.ready_list(envelope.queue, envelope.priority))
            wake_lists.append(self.keys.wake_list(envelope.queue))
            # Due times go to the server as delays: it adds them to its own clock.
            delayed = envelope.eta is not None and envelope.eta > now
            args += [
                envelope.id,
                envelope.queue,
                envelope.priority,
                envelope.eta - now if envelope.eta is not None and delayed else "",
                envelope.body,
            ]
        keys += wake_lists
        # Nobody can listen for an id made just now: its record is not published.
        fresh_ids = {envelope.id for envelope in envelopes if envelope.fresh}
        for task_id, record in records.items():
            keys.append(self.keys.result(task_id))
            args += [record, "" if task_id in fresh_ids else self.keys.result_channel(task_id)]
        self._scripts.call(self._client, self._scripts.publish, keys, args)

    def _publish_one(self, envelope: Envelope, records: Mapping[str, bytes], ttl: float) -> bool:
        """publish_one.lua for a fresh message, ready now, with its record if any (a
        delay() call); False, having done nothing, for any other."""
        record = records.get(envelope.id)
        if not envelope.fresh or envelope.eta is not None or len(records) > (record is not None):
            return False
        check_envelope(envelope)
        keys = self.keys.one_message(envelope.queue, envelope.priority)
        args: list[Any] = [envelope.id, envelope.queue, envelope.priority, envelope.body]
        if record is not None:
            keys = [*keys, self.keys.result(envelope.id)]
            args += [record, milliseconds(ttl), self._records_db]
        self._scripts.call(self._client, self._scripts.publish_one, keys, args)
        return True

    # -- consuming ------------------------------------------------------------------------

    @_operational
    def reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        taken, foreign, next_due = self._reserve.run(queues, count, lease)
        if count > 0:
            self._waker.reserved(queues, len(taken) < 6 * count, next_due)
        deliveries = []
        for index in range(0, len(taken), 6):
            message_id, meta, body, revoked, count_, token = taken[index : index + 6]
            _generation, priority, queue = meta.split(b":", 2)
            deliveries.append(
                Delivery(
                    message_id.decode(),
                    queue.decode(),
                    int(priority),
                    body,
                    revoked == 1,
                    int(count_),
                    token.decode(),
                )
            )
        if deliveries:
            if len(self._queue_hints) > _QUEUE_HINTS:
                self._queue_hints.clear()
            self._queue_hints.update((d.id, d.queue) for d in deliveries)
        # Due or expired messages of other queues: promote them too (they may have no
        # consumer of their own), in a bounded number of extra calls.
        seen = set(queues)
        for _round in range(3):
            pending = [queue for queue in foreign if queue not in seen]
            if not pending:
                break
            seen.update(pending)
            _taken, foreign, _due = self._reserve.run(pending, 0, 0)
        return deliveries

    @_operational
    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block in ``BLPOP`` on the wake lists of ``queues``: a message published wakes
        one waiting consumer, not all of them (see :mod:`.redis_wake`)."""
        if not queues:  # nothing could wake us
            time.sleep(max(0.0, timeout))
            return
        if timeout > 0:
            self._waker.wait(queues, timeout)

    @_operational
    def extend(self, ids: Iterable[Held], lease: float) -> None:
        args: list[Any] = [lease]
        for held in ids:
            args += lease_of(held)
        if len(args) > 1:
            self._scripts.extend(self.keys.core(), args)

    @_operational
    def ack_with_records(self, settlements: Sequence[Settlement], record_ttl: float) -> list[str]:
        """One ``ack.lua`` call per message (each atomic on its own), pipelined: one round
        trip however many."""
        calls = [self._ack_call(held, record, record_ttl) for held, record in settlements]
        if len(calls) == 1:
            script, keys, args = calls[0]
            results = [self._scripts.call(self._client, script, keys, args)]
        elif calls:
            results = self._scripts.pipelined(self._client, calls)
        else:
            return []
        return [
            lease_of(held)[0] for (held, _record), done in zip(settlements, results) if done == 0
        ]

    def _ack_call(self, held: Held, record: bytes | None, record_ttl: float) -> ScriptCall:
        message_id, token = lease_of(held)
        self._queue_hints.pop(message_id, None)
        keys = self.keys.core()
        args: list[Any] = [message_id, token]
        if record is not None:
            keys.append(self.keys.result(message_id))
            args += [
                record,
                milliseconds(record_ttl),
                self.keys.result_channel(message_id),
                self._records_db,
            ]
        return self._scripts.ack, keys, args

    @_operational
    def release_with_record(
        self,
        message_id: Held,
        body: bytes | None,
        eta: float | None,
        record: bytes | None,
        record_ttl: float,
    ) -> bool:
        message_id, token = lease_of(message_id)
        hint = self._queue_hints.pop(message_id, None)
        for _attempt in range(_RACE_ATTEMPTS):
            queue = hint if hint is not None else self._stored_queue(message_id)
            hint = None
            keys = self.keys.core()
            if queue:
                keys += [*self.keys.ready_lists(queue), self.keys.wake_list(queue)]
            if record is not None:
                keys.append(self.keys.result(message_id))
            args: list[Any] = [
                token,
                message_id,
                queue,
                "0" if body is None else "1",
                body or b"",
                "" if eta is None else eta - self.now(),  # the server adds its clock
                "0" if record is None else "1",
                record or b"",
                milliseconds(record_ttl),
                self.keys.result_channel(message_id),
            ]
            outcome = self._scripts.release(keys, args)
            if outcome >= 0:
                return bool(outcome == 1)
        raise OperationalError(f"Message {message_id} kept moving between queues; not released")

    def _stored_queue(self, message_id: str) -> str:
        """The queue of a stored message, or "" if there is none."""
        meta = cast("bytes | None", self._client.hget(self.keys.meta, message_id))
        return meta.split(b":", 2)[2].decode() if meta else ""

    @_operational
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._queue_hints.pop(delivery.id, None)
        failed_at = self.now()
        queue, why = delivery.queue.encode(), reason.encode("utf-8", "replace")
        header = f"{failed_at!r}:{delivery.priority}:{len(queue)}:{len(why)}:".encode()
        keys = [*self.keys.core(), self.keys.dead, self.keys.dead_index]
        args: list[Any] = [
            delivery.id,
            header + queue + why + delivery.body,
            failed_at,
            self.dead_letter_limit,
        ]
        self._scripts.dead_letter(keys, args)

    @_operational
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        ids = cast("list[bytes]", self._client.zrevrange(self.keys.dead_index, 0, limit - 1))
        if not ids:
            return []
        packed = cast("list[bytes | None]", self._client.hmget(self.keys.dead, ids))
        return [unpack_dead(i.decode(), p) for i, p in zip(ids, packed) if p is not None]

    @_operational
    def retry_dead_letter(self, message_id: str) -> bool:
        for _attempt in range(_RACE_ATTEMPTS):
            packed = cast("bytes | None", self._client.hget(self.keys.dead, message_id))
            if packed is None:
                return False
            queue = unpack_dead(message_id, packed).queue
            keys = [
                *self.keys.core(),
                self.keys.dead,
                self.keys.dead_index,
                *self.keys.ready_lists(queue),
                self.keys.wake_list(queue),
            ]
            args: list[Any] = [message_id, queue]
            outcome = self._scripts.retry_dead_letter(keys, args)
            if outcome >= 0:
                return bool(outcome == 1)
        raise OperationalError(f"Dead letter {message_id} kept changing; not retried")

    @_operational
    def delete_dead_letter(self, message_id: str) -> bool:
        pipeline = self._client.pipeline(transaction=True)
        pipeline.hdel(self.keys.dead, message_id)
        pipeline.zrem(self.keys.dead_index, message_id)
        deleted, _removed = pipeline.execute()
        return bool(deleted)

    # -- inspection and administration ----------------------------------------------------

    @_operational
    def held(self, message_ids: Sequence[str]) -> set[str]:
        if not message_ids:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.zscore(self.keys.leases, message_id)
        return {m for m, score in zip(message_ids, pipe.execute()) if score is not None}

    @_operational
    def queue_length(self, queue: str) -> int:
        return max(0, int(self._client.hget(self.keys.ready, queue) or 0))

    @_operational
    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Ready counts from the ready hash; delayed and reserved by reading the ids of
        the delayed and leased sets and their queues, in chunks (no script)."""
        ready = self._client.hmget(self.keys.ready, list(queues)) if queues else []
        counts = {
            queue: {"ready": max(0, int(value or 0)), "delayed": 0, "reserved": 0}
            for queue, value in zip(queues, ready)
        }
        for kind, key in (("delayed", self.keys.delayed), ("reserved", self.keys.leases)):
            start = 0
            while True:
                ids = cast("list[bytes]", self._client.zrange(key, start, start + COUNT_CHUNK - 1))
                if not ids:
                    break
                start += len(ids)
                metas = cast("list[Optional[bytes]]", self._client.hmget(self.keys.meta, ids))
                for meta in metas:
                    queue = meta.decode().split(":", 2)[2] if meta else None
                    if queue in counts:
                        counts[queue][kind] += 1
        return {
            queue: QueueCounts(by_kind["ready"], by_kind["delayed"], by_kind["reserved"])
            for queue, by_kind in counts.items()
        }

    @_operational
    def purge(self, queue: str) -> int:
        keys = [*self.keys.core(), *self.keys.ready_lists(queue), self.keys.wake_list(queue)]
        total = 0
        while True:
            dropped, done = self._scripts.purge(keys, [queue, PURGE_BATCH])
            total += int(dropped)
            if done:
                return total


def unpack_dead(message_id: str, packed: bytes) -> DeadLetter:
    """Read a dead letter packed by ``dead_letter``."""
    failed_at, priority, queue_bytes, reason_bytes, rest = packed.split(b":", 4)
    queue_end = int(queue_bytes)
    reason_end = queue_end + int(reason_bytes)
    return DeadLetter(
        id=message_id,
        queue=rest[:queue_end].decode(),
        priority=int(priority),
        body=rest[reason_end:],
        reason=rest[queue_end:reason_end].decode("utf-8", "replace"),
        failed_at=float(failed_at),
    )
