"""``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``: the production broker.

Every change that touches more than one key is one Lua script (``lua/*.lua``, one file per
command, loaded once per client and run with EVALSHA). Key names live in
:mod:`.redis_keys`, script loading in :mod:`.redis_scripts`, connection handling in
:mod:`.redis_connection`, pub/sub waiting in :mod:`.redis_pubsub`. No operation looks at
more than a bounded batch of a queue, except ``purge``, which is linear in what it drops.
Needs Redis 5.0 or newer; ``docs/broker-redis.rst`` describes the design.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, TypeVar, cast

import redis

from ..exceptions import OperationalError
from . import hide_password
from .base import Broker, DeadLetter, Delivery, Envelope, check_envelope
from .redis_connection import check_version, open_connection
from .redis_keys import RedisKeys
from .redis_pubsub import ResultListener, SubscriberPool
from .redis_scripts import RedisScripts

#: Most due delayed messages, and most expired leases, one ``reserve`` looks at.
PROMOTE_BATCH = 1000
#: Most list entries one ``purge`` script pops before yielding the server.
PURGE_BATCH = 5000
#: Dead letters kept; the oldest beyond this are dropped.
DEAD_LETTER_LIMIT = 10_000
#: Attempts for the read-then-script operations when a message moves queue meanwhile.
_RACE_ATTEMPTS = 5
#: Most ids whose queue ``reserve`` remembers so that ``release`` need not read it first.
_QUEUE_HINTS = 65_536

F = TypeVar("F", bound=Callable[..., Any])


def _operational(method: F) -> F:
    """Check the server on first use; turn redis-py errors into OperationalError."""

    @functools.wraps(method)
    def wrapper(self: RedisBroker, *args: Any, **kwargs: Any) -> Any:
        try:
            if not self._server_checked:
                self._check_server()
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise OperationalError(
                f"Cannot reach Redis at {self.url} ({exc}); check the URL and that the "
                "server is running"
            ) from None
        except redis.RedisError as exc:
            raise OperationalError(f"Redis at {self.url} failed a command: {exc}") from None

    return cast(F, wrapper)


def _milliseconds(seconds: float) -> int:
    """A time to live for PX/PEXPIRE; 0 means none."""
    return max(1, math.ceil(seconds * 1000)) if seconds > 0 else 0


class RedisBroker(Broker):
    """A broker kept in Redis 5.0+; see ``docs/broker-redis.rst`` for the key layout.

    ``options`` are redis-py client arguments (``socket_timeout``, ``ssl_ca_certs``...),
    plus ``dead_letter_limit`` (default 10,000).
    """

    kind = "redis"

    def __init__(self, url: str, *, key_prefix: str = "flask_tasks", **options: Any) -> None:
        self.url = hide_password(url)
        self.dead_letter_limit = int(options.pop("dead_letter_limit", DEAD_LETTER_LIMIT))
        self.keys = RedisKeys(key_prefix)
        self._connection = open_connection(url, options)
        self._client = self._connection.client
        self._scripts = RedisScripts(self._client)
        self._waiters = SubscriberPool(self._client, keep_listening=True)
        self._watchers = ResultListener(self._client)
        self._server_checked = False
        self._check_lock = threading.Lock()
        # id -> queue of messages this broker handed out: a hint, checked by release.lua.
        self._queue_hints: dict[str, str] = {}

    def _check_server(self) -> None:
        """Refuse Redis older than 5.0 (naming the version found); preload the scripts."""
        with self._check_lock:
            if self._server_checked:
                return
            try:
                info = self._client.info("server")
            except redis.ResponseError:  # INFO disabled (some hosted Redis): cannot check
                info = None
            if info is not None:
                check_version(info, self.url)
            self._scripts.preload(self._client)
            self._server_checked = True

    # -- publishing -----------------------------------------------------------------------

    @_operational
    def publish(
        self,
        envelopes: Sequence[Envelope],
        records: Mapping[str, bytes] | None = None,
        record_ttl: float = 0,
    ) -> None:
        if not envelopes and not records:
            return
        now = self.now()
        keys = self.keys.core()
        args: list[Any] = [len(envelopes), _milliseconds(record_ttl)]
        for envelope in envelopes:
            check_envelope(envelope)
            keys.append(self.keys.ready_list(envelope.queue, envelope.priority))
            delayed = envelope.eta is not None and envelope.eta > now
            args += [
                envelope.id, envelope.queue, envelope.priority,
                envelope.eta if delayed else "", envelope.body,
                self.keys.queue_channel(envelope.queue),
            ]
        for task_id, record in (records or {}).items():
            keys.append(self.keys.result(task_id))
            args += [record, self.keys.result_channel(task_id)]
        self._scripts.publish(keys, args)

    # -- consuming ------------------------------------------------------------------------

    @_operational
    def reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        now = self.now()
        taken, foreign = self._run_reserve(queues, count, now, now + lease)
        deliveries = []
        for index in range(0, len(taken), 4):
            message_id, meta, body, revoked = taken[index : index + 4]
            _generation, priority, queue = meta.split(b":", 2)
            deliveries.append(
                Delivery(message_id.decode(), queue.decode(), int(priority), body, revoked == 1)
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
            _taken, foreign = self._run_reserve(pending, 0, now, now)
        return deliveries

    def _run_reserve(
        self, queues: Sequence[str], count: int, now: float, deadline: float
    ) -> tuple[list[bytes], list[str]]:
        args: list[Any] = [now, deadline, max(0, count), PROMOTE_BATCH]
        for queue in queues:
            args += [queue, self.keys.queue_channel(queue)]
        keys = self.keys.core() + self.keys.ready_lists_of(queues) + [self.keys.revoked]
        taken, foreign = self._scripts.reserve(keys, args)
        return taken, [queue.decode() for queue in foreign]

    @_operational
    def wait(self, queues: Sequence[str], timeout: float) -> None:
        if not queues:  # nothing could wake us
            time.sleep(max(0.0, timeout))
            return
        if timeout <= 0:
            return
        channels = [self.keys.queue_channel(queue) for queue in queues]
        with self._waiters.listening(channels) as subscriber:
            pipe = self._client.pipeline(transaction=False)
            pipe.exists(*self.keys.ready_lists_of(queues))
            # A delayed message falling due, or a lease running out, may make work ready.
            pipe.zrange(self.keys.delayed, 0, 0, withscores=True)
            pipe.zrange(self.keys.leases, 0, 0, withscores=True)
            ready, *earliest = pipe.execute()
            if ready:
                return
            for first in earliest:
                if first:
                    timeout = min(timeout, max(0.0, first[0][1] - self.now()))
            subscriber.wait(timeout)

    @_operational
    def extend(self, ids: Iterable[str], lease: float) -> None:
        deadline = self.now() + lease
        mapping = dict.fromkeys(ids, deadline)
        if mapping:
            self._client.zadd(self.keys.leases, mapping, xx=True)

    @_operational
    def ack(self, message_id: str, record: bytes | None = None, record_ttl: float = 0) -> None:
        self._scripts.ack(*self._ack_call(message_id, record, record_ttl))

    @_operational
    def ack_many(self, acks: Sequence[tuple[str, bytes | None, float]]) -> None:
        """One pipelined round trip of ``ack.lua`` calls (each atomic on its own)."""
        if len(acks) == 1:
            self.ack(*acks[0])
            return
        pipe = self._client.pipeline(transaction=False)
        for message_id, record, record_ttl in acks:
            keys, args = self._ack_call(message_id, record, record_ttl)
            self._scripts.ack(keys, args, client=pipe)
        pipe.execute()

    def _ack_call(
        self, message_id: str, record: bytes | None, record_ttl: float
    ) -> tuple[list[str], list[Any]]:
        self._queue_hints.pop(message_id, None)
        keys = self.keys.core()
        args: list[Any] = [message_id]
        if record is not None:
            keys.append(self.keys.result(message_id))
            args += [record, _milliseconds(record_ttl), self.keys.result_channel(message_id)]
        return keys, args

    @_operational
    def release(
        self,
        message_id: str,
        body: bytes | None = None,
        eta: float | None = None,
        record: bytes | None = None,
        record_ttl: float = 0,
    ) -> None:
        hint = self._queue_hints.pop(message_id, None)
        for _attempt in range(_RACE_ATTEMPTS):
            queue = hint if hint is not None else self._stored_queue(message_id)
            hint = None
            keys = self.keys.core() + (self.keys.ready_lists(queue) if queue else [])
            if record is not None:
                keys.append(self.keys.result(message_id))
            args: list[Any] = [
                self.now(), message_id, queue, self.keys.queue_channel(queue),
                "0" if body is None else "1", body or b"", "" if eta is None else eta,
                "0" if record is None else "1", record or b"", _milliseconds(record_ttl),
                self.keys.result_channel(message_id),
            ]
            if self._scripts.release(keys, args) == 1:
                return
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
            delivery.id, header + queue + why + delivery.body, failed_at, self.dead_letter_limit
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
        return [_unpack_dead(i.decode(), p) for i, p in zip(ids, packed) if p is not None]

    @_operational
    def retry_dead_letter(self, message_id: str) -> bool:
        for _attempt in range(_RACE_ATTEMPTS):
            packed = cast("bytes | None", self._client.hget(self.keys.dead, message_id))
            if packed is None:
                return False
            queue = _unpack_dead(message_id, packed).queue
            keys = [*self.keys.core(), self.keys.dead, self.keys.dead_index,
                    *self.keys.ready_lists(queue)]
            args: list[Any] = [message_id, queue, self.keys.queue_channel(queue)]
            outcome = self._scripts.retry_dead_letter(keys, args)
            if outcome >= 0:
                return outcome == 1
        raise OperationalError(f"Dead letter {message_id} kept changing; not retried")

    # -- results --------------------------------------------------------------------------

    @_operational
    def set_result(self, task_id: str, record: bytes, ttl: float) -> None:
        self._scripts.set_result(
            [self.keys.result(task_id)],
            [record, _milliseconds(ttl), self.keys.result_channel(task_id)],
        )

    @_operational
    def get_result(self, task_id: str) -> bytes | None:
        return cast("bytes | None", self._client.get(self.keys.result(task_id)))

    @_operational
    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        if not task_ids:
            return []
        records = self._client.mget([self.keys.result(task_id) for task_id in task_ids])
        return cast("list[bytes | None]", records)

    @_operational
    def forget_result(self, task_id: str) -> None:
        self._scripts.forget_result(
            [self.keys.result(task_id)], [self.keys.result_channel(task_id)]
        )

    @_operational
    def watch_result(self, task_id: str, last: bytes | None, timeout: float) -> bytes | None:
        key = self.keys.result(task_id)
        if timeout <= 0:
            return cast("bytes | None", self._client.get(key))
        # Callers (AsyncResult.get, the status endpoint) have just read the record, so
        # subscribe first and read once: one round trip fewer than reading before too.
        deadline = self.now() + timeout
        with self._watchers.listening(self.keys.result_channel(task_id)) as inbox:
            current = cast("bytes | None", self._client.get(key))
            while True:
                remaining = deadline - self.now()
                if current != last or remaining <= 0:
                    return current
                published = inbox.take(remaining)
                if published is None:
                    continue  # timed out: the deadline check returns the current record
                # A write publishes the record itself; a deletion publishes nothing.
                current = published or cast("bytes | None", self._client.get(key))

    # -- revocation -----------------------------------------------------------------------

    @_operational
    def revoke(self, task_ids: Sequence[str], ttl: float) -> None:
        if not task_ids or ttl <= 0:
            return
        now = self.now()
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(self.keys.revoked, dict.fromkeys(task_ids, now + ttl))
        # Forget expired revocations (bounded: only those past, oldest first).
        pipe.zremrangebyscore(self.keys.revoked, "-inf", now)
        pipe.execute()

    @_operational
    def revoked(self, task_ids: Sequence[str]) -> set[str]:
        if not task_ids:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.zscore(self.keys.revoked, task_id)
        now = self.now()
        return {
            task_id
            for task_id, expires in zip(task_ids, pipe.execute())
            if expires is not None and expires > now
        }

    @_operational
    def incr(self, key: str, ttl: float) -> int:
        return int(self._scripts.incr([self.keys.counter(key)], [max(1, _milliseconds(ttl))]))

    # -- inspection and administration ----------------------------------------------------

    @_operational
    def queue_length(self, queue: str) -> int:
        return max(0, int(self._client.hget(self.keys.ready, queue) or 0))

    @_operational
    def purge(self, queue: str) -> int:
        keys = self.keys.core() + self.keys.ready_lists(queue)
        total = 0
        while True:
            dropped, done = self._scripts.purge(keys, [queue, PURGE_BATCH])
            total += int(dropped)
            if done:
                return total

    @_operational
    def ping(self) -> None:
        self._client.ping()

    def close(self) -> None:
        self._waiters.close()
        self._watchers.close()
        self._connection.close()


def _unpack_dead(message_id: str, packed: bytes) -> DeadLetter:
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
