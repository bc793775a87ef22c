"""``redis+cluster://``: the Redis broker on a Redis Cluster, its queues spread over shards.

Each queue keeps the single-server broker's key set under a hash tag of its own
(:meth:`.ClusterKeys.queue`), and the same Lua scripts run on it, one queue per call: a
script never touches two slots. What spans queues is done queue by queue:

- ``reserve`` from several queues calls ``reserve.lua`` on each in precedence order until
  ``count`` are taken (promoting the due and expired messages of the queues it visits),
  then reads the revocations (on the ``{prefix}`` slot) for what it took;
- ``publish`` runs one ``publish.lua`` per queue (atomic per queue, all pipelined);
- the joint steps write result records first, then change the queue: PENDING is stored
  before its message exists, and a RETRY or final record before its message is released
  or acked, so a crash in between loses nothing (the message runs again at worst).
  Fenced settlements check the lease before writing the record.

A message id is found through its :class:`.Delivery` (the queue it came from) or, for a
bare id, through the ids this broker handed out and else the set of queues published to.
Publishing an id replaces it within its queue only. ``docs/broker-redis-cluster.rst``
describes the design.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional, cast

from ..exceptions import ImproperlyConfigured, OperationalError
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
from .redis import DEAD_LETTER_LIMIT, PURGE_BATCH, unpack_dead
from .redis_cluster_connection import node_client, pipeline
from .redis_cluster_store import ClusterScripts, RedisClusterStore
from .redis_cluster_wake import ClusterWaker
from .redis_keys import RedisKeys
from .redis_reserve import PROMOTE_BATCH
from .redis_scripts import ScriptCall
from .redis_store import operational as _operational

#: Marks the point where ``reserve`` probes the queues after the first.
_PROBE = "\0probe"
#: Most ids whose queue ``reserve`` remembers, so that a bare id need not be looked up.
_QUEUE_HINTS = 65_536


class RedisClusterBroker(RedisClusterStore, Broker):
    """A transport and store kept in a Redis Cluster; see the module docs.

    ``options`` are redis-py cluster client arguments, plus ``dead_letter_limit`` (per
    queue; default 10,000).
    """

    wait_sees_earlier_work = True

    def __init__(self, url: str, *, key_prefix: str = "flask_tasks", **options: Any) -> None:
        self.dead_letter_limit = int(options.pop("dead_letter_limit", DEAD_LETTER_LIMIT))
        if options.pop("records_db", None) is not None:
            raise ImproperlyConfigured("A Redis Cluster has database 0 only (records_db)")
        super().__init__(url, key_prefix=key_prefix, **options)
        self._waker = ClusterWaker(self._cluster, self.keys, self.listeners)
        self._queue_hints: dict[str, str] = {}
        self._registered: set[str] = set()

    def _run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        if len(calls) == 1:
            script, keys, args = calls[0]
            return [script(keys, args)]
        return self._scripts.pipelined(self._client, calls) if calls else []

    # -- publishing -----------------------------------------------------------------------

    @_operational
    def publish_with_records(
        self, envelopes: Sequence[Envelope], records: Mapping[str, bytes], record_ttl: float
    ) -> None:
        by_queue: dict[str, list[Envelope]] = {}
        for envelope in envelopes:
            check_envelope(envelope)
            by_queue.setdefault(envelope.queue, []).append(envelope)
        if records:  # PENDING first: a worker's outcome must never be overwritten by it
            self.set_results(records, record_ttl)
        new = by_queue.keys() - self._registered
        if new:
            self._cluster.sadd(self.keys.queues, *new)
            self._registered.update(new)
        now = self.now()
        calls: list[ScriptCall] = []
        for queue, batch in by_queue.items():
            keys = self.keys.queue(queue)
            script_keys = keys.core() + [keys.ready_list(queue, e.priority) for e in batch]
            script_keys += [keys.wake_list(queue)] * len(batch)
            fresh = "1" if all(envelope.fresh for envelope in batch) else ""
            args: list[Any] = [len(batch), 0, "", fresh]
            for envelope in batch:
                delayed = envelope.eta is not None and envelope.eta > now
                wait = cast(float, envelope.eta) - now if delayed else ""
                args += [envelope.id, queue, envelope.priority, wait, envelope.body]
            calls.append((self._scripts.publish, script_keys, args))
        self._run(calls)

    # -- consuming ------------------------------------------------------------------------

    @_operational
    def reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        queues = list(dict.fromkeys(queues))
        taken: list[Any] = []
        next_due: list[float] = []
        for queue in self._worth_visiting(queues, count):
            wanted = count - len(taken) // 6
            if count > 0 and wanted <= 0:
                break
            if queue is _PROBE:  # the first queue did not fill ``count``: probe the rest
                continue
            keys = self.keys.queue(queue)
            script_keys = keys.core() + keys.reserve_keys([queue]) + [keys.revoked]
            args: list[Any] = [lease, max(0, wanted), PROMOTE_BATCH, "", queue]
            got, _foreign, due = self._scripts.reserve(script_keys, args)[:3]
            taken += got
            if due:
                next_due.append(float(due))
        if count > 0:
            due_text = str(min(next_due)).encode() if next_due else b""
            self._waker.reserved(queues, len(taken) < 6 * count, due_text)
        ids = [taken[index].decode() for index in range(0, len(taken), 6)]
        revoked = self.revoked(ids) if ids else set()
        deliveries = []
        for index in range(0, len(taken), 6):
            message_id, meta, body, _flag, deliveries_, token = taken[index : index + 6]
            _generation, priority, queue = meta.split(b":", 2)
            deliveries.append(
                Delivery(
                    message_id.decode(),
                    queue.decode(),
                    int(priority),
                    body,
                    message_id.decode() in revoked,
                    int(deliveries_),
                    token.decode(),
                )
            )
        if len(self._queue_hints) > _QUEUE_HINTS:
            self._queue_hints.clear()
        self._queue_hints.update((d.id, d.queue) for d in deliveries)
        return deliveries

    def _worth_visiting(self, queues: list[str], count: int) -> Iterator[str]:
        """The queues ``reserve`` runs its script on, in order: every one to promote only
        (count 0); else the first, then, if it did not fill ``count`` (the caller stops
        before the marker otherwise), those of the rest that ``probe.lua`` finds work
        in (one pipelined round trip instead of a script call per idle queue)."""
        if count <= 0 or len(queues) <= 2:
            yield from queues
            return
        yield queues[0]
        yield _PROBE
        rest = queues[1:]
        probe = cast(ClusterScripts, self._scripts).probe
        calls = [(probe, self._probe_keys(q), [q]) for q in rest]
        yield from (queue for queue, busy in zip(rest, self._run(calls)) if busy)

    def _probe_keys(self, queue: str) -> list[str]:
        keys = self.keys.queue(queue)
        return [keys.ready, keys.delayed, keys.leases]

    @_operational
    def wait(self, queues: Sequence[str], timeout: float) -> None:
        if not queues:
            time.sleep(max(0.0, timeout))
        elif timeout > 0:
            self._waker.wait(list(dict.fromkeys(queues)), timeout)

    # -- finding messages -----------------------------------------------------------------

    def _known_queues(self) -> list[str]:
        stored = cast("set[bytes]", self._cluster.smembers(self.keys.queues))
        return sorted(queue.decode() for queue in stored)

    def _find(self, message_ids: Sequence[str], where: str = "meta") -> dict[str, str]:
        """message id -> queue of those of ``message_ids`` stored (``where="meta"``) or
        dead-lettered (``"dead"``): the queue a reserve noted, else looked up in every
        queue published to (one pipelined round trip)."""
        found: dict[str, str] = {}
        missing = list(message_ids)
        if where == "meta":
            found = {m: self._queue_hints[m] for m in missing if m in self._queue_hints}
            missing = [m for m in missing if m not in found]
        queues = self._known_queues() if missing else []
        if queues:
            pipe = pipeline(self._cluster)
            for message_id in missing:
                for queue in queues:
                    pipe.hexists(getattr(self.keys.queue(queue), where), message_id)
            replies = iter(pipe.execute())
            for message_id in missing:
                for queue in queues:
                    if next(replies) and message_id not in found:
                        found[message_id] = queue
        return found

    def _locate(self, held: Iterable[Held]) -> list[tuple[str, str, Optional[str]]]:
        """(id, lease token, queue or None) of each: a delivery names its queue; bare ids
        are looked up together (:meth:`_find`)."""
        pairs = [
            (*lease_of(each), each.queue if isinstance(each, Delivery) else None) for each in held
        ]
        bare = [message_id for message_id, _token, queue in pairs if queue is None]
        found = self._find(bare) if bare else {}
        return [(m, t, q if q is not None else found.get(m)) for m, t, q in pairs]

    def _holding(self, leases: Sequence[tuple[str, str, str]]) -> list[bool]:
        """Whether each (id, token, queue) still holds its lease (fencing, before a
        record is written; the queue's script checks again)."""
        pipe = pipeline(self._cluster)
        for message_id, _token, queue in leases:
            pipe.hget(self.keys.queue(queue).leased, message_id)
        return [
            bool(info) and cast(bytes, info).split(b":", 1)[1].decode() == token
            for (_id, token, _queue), info in zip(leases, pipe.execute())
        ]

    # -- settling -------------------------------------------------------------------------

    @_operational
    def extend(self, ids: Iterable[Held], lease: float) -> None:
        by_queue: dict[str, list[Any]] = {}
        for message_id, token, queue in self._locate(ids):
            if queue is not None:
                by_queue.setdefault(queue, [lease]).extend((message_id, token))
        calls = [(self._scripts.extend, self.keys.queue(q).core(), a) for q, a in by_queue.items()]
        self._run(calls)

    @_operational
    def ack_with_records(self, settlements: Sequence[Settlement], record_ttl: float) -> list[str]:
        where = self._locate([held for held, _record in settlements])
        located = [(*at, record) for at, (_held, record) in zip(where, settlements)]
        fenced = [(m, t, q) for m, t, q, r in located if r is not None and t and q is not None]
        holding = dict(zip([m for m, _t, _q in fenced], self._holding(fenced))) if fenced else {}
        refused = [m for m, holds in holding.items() if not holds]
        records = {m: r for m, _t, _q, r in located if r is not None and m not in refused}
        if records:  # before the ack: a crash in between runs the task again, loses nothing
            self.set_results(records, record_ttl)
        calls: list[ScriptCall] = []
        acked: list[str] = []
        for message_id, token, queue, _record in located:
            if message_id in refused:
                continue
            if queue is None:
                if token:
                    refused.append(message_id)
                continue
            self._queue_hints.pop(message_id, None)
            calls.append((self._scripts.ack, self.keys.queue(queue).core(), [message_id, token]))
            acked.append(message_id)
        results = self._run(calls)
        return refused + [m for m, done in zip(acked, results) if done == 0]

    @_operational
    def release_with_record(
        self,
        message_id: Held,
        body: bytes | None,
        eta: float | None,
        record: bytes | None,
        record_ttl: float,
    ) -> bool:
        [(message_id, token, queue)] = self._locate([message_id])
        self._queue_hints.pop(message_id, None)
        if record is not None:
            if token and (queue is None or not self._holding([(message_id, token, queue)])[0]):
                return False
            self.set_result(message_id, record, record_ttl)
        if queue is None:  # stored nowhere: nothing to release
            return not token
        keys = self.keys.queue(queue)
        wait = "" if eta is None else eta - self.now()  # the server adds its clock
        flag = "0" if body is None else "1"
        # The record (ARGV[7..10]) was written above, on its own slot.
        args: list[Any] = [token, message_id, queue, flag, body or b"", wait, "0", b"", 0, ""]
        script_keys = [*keys.core(), *keys.ready_lists(queue), keys.wake_list(queue)]
        outcome = self._scripts.release(script_keys, args)
        if outcome < 0:
            raise OperationalError(f"Message {message_id} is stored under another queue")
        return bool(outcome == 1)

    # -- dead letters ---------------------------------------------------------------------

    @_operational
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._queue_hints.pop(delivery.id, None)
        keys = self.keys.queue(delivery.queue)
        failed_at = self.now()
        queue, why = delivery.queue.encode(), reason.encode("utf-8", "replace")
        header = f"{failed_at!r}:{delivery.priority}:{len(queue)}:{len(why)}:".encode()
        packed = header + queue + why + delivery.body
        self._scripts.dead_letter(
            [*keys.core(), keys.dead, keys.dead_index],
            [delivery.id, packed, failed_at, self.dead_letter_limit],
        )

    @_operational
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        queues = self._known_queues() if limit > 0 else []
        if not queues:
            return []
        pipe = pipeline(self._cluster)
        for queue in queues:
            pipe.zrevrange(self.keys.queue(queue).dead_index, 0, limit - 1, withscores=True)
        newest = sorted(
            ((score, m.decode(), q) for q, got in zip(queues, pipe.execute()) for m, score in got),
            reverse=True,
        )[:limit]
        pipe = pipeline(self._cluster)
        for _score, message_id, queue in newest:
            pipe.hget(self.keys.queue(queue).dead, message_id)
        return [
            unpack_dead(message_id, packed)
            for (_score, message_id, _queue), packed in zip(newest, pipe.execute())
            if packed is not None
        ]

    @_operational
    def retry_dead_letter(self, message_id: str) -> bool:
        queue = self._find([message_id], "dead").get(message_id)
        if queue is None:
            return False
        keys = self.keys.queue(queue)
        script_keys = [*keys.core(), keys.dead, keys.dead_index]
        script_keys += [*keys.ready_lists(queue), keys.wake_list(queue)]
        return bool(self._scripts.retry_dead_letter(script_keys, [message_id, queue]) == 1)

    @_operational
    def delete_dead_letter(self, message_id: str) -> bool:
        queue = self._find([message_id], "dead").get(message_id)
        if queue is None:
            return False
        keys = self.keys.queue(queue)
        pipeline = node_client(self._cluster, keys.dead).pipeline(transaction=True)
        pipeline.hdel(keys.dead, message_id)
        pipeline.zrem(keys.dead_index, message_id)
        deleted, _removed = pipeline.execute()
        return bool(deleted)

    # -- inspection and administration ----------------------------------------------------

    @_operational
    def held(self, message_ids: Sequence[str]) -> set[str]:
        located = self._find(message_ids) if message_ids else {}
        if not located:
            return set()
        pipe = pipeline(self._cluster)
        for message_id, queue in located.items():
            pipe.zscore(self.keys.queue(queue).leases, message_id)
        return {m for m, score in zip(located, pipe.execute()) if score is not None}

    @_operational
    def queue_length(self, queue: str) -> int:
        return max(0, int(self._cluster.hget(self.keys.queue(queue).ready, queue) or 0))

    @_operational
    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Ready from each queue's ready count; delayed and reserved are the sizes of its
        own delayed and lease sets (they hold that queue's messages only)."""
        pipe = pipeline(self._cluster)
        for queue in queues:
            keys = self.keys.queue(queue)
            pipe.hget(keys.ready, queue)
            pipe.zcard(keys.delayed)
            pipe.zcard(keys.leases)
        replies = pipe.execute() if queues else []
        return {
            queue: QueueCounts(max(0, int(replies[i * 3] or 0)), *replies[i * 3 + 1 : i * 3 + 3])
            for i, queue in enumerate(queues)
        }

    @_operational
    def purge(self, queue: str) -> int:
        keys: RedisKeys = self.keys.queue(queue)
        script_keys = [*keys.core(), *keys.ready_lists(queue), keys.wake_list(queue)]
        total = 0
        while True:
            dropped, done = self._scripts.purge(script_keys, [queue, PURGE_BATCH])
            total += int(dropped)
            if done:
                return total
