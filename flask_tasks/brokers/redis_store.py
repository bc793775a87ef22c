"""The Redis store: result records, revocations, counters, claims, worker heartbeats.

:class:`RedisStore` opens the connection and checks the server; :class:`.RedisBroker`
(``redis.py``) adds the queues and the joint steps on the same connection. Writes that
touch more than one key are Lua scripts (``lua/*.lua``); batches are pipelined, one round
trip each.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Callable, TypeVar, cast

import redis
from redis.exceptions import RedisClusterException

from ..exceptions import OperationalError
from .base import Store, hide_password
from .redis_connection import RedisConnection, check_version, open_connection
from .redis_keys import RedisKeys
from .redis_pubsub import ResultListener, Watchers
from .redis_scripts import RedisScripts, ScriptCall

#: Most expired workers one heartbeat drops.
EXPIRED_WORKERS_BATCH = 100

F = TypeVar("F", bound=Callable[..., Any])


def operational(method: F) -> F:
    """Check the server on first use; turn redis-py errors into OperationalError."""

    @functools.wraps(method)
    def wrapper(self: RedisStore, *args: Any, **kwargs: Any) -> Any:
        try:
            if not self._server_checked:
                self._check_server()
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise OperationalError(
                f"Cannot reach Redis at {self.url} ({exc}); check the URL and that the "
                "server is running"
            ) from None
        except (redis.RedisError, RedisClusterException) as exc:
            raise OperationalError(f"Redis at {self.url} failed a command: {exc}") from None

    return cast(F, wrapper)


def milliseconds(seconds: float) -> int:
    """A time to live for PX/PEXPIRE; 0 means none."""
    return max(1, math.ceil(seconds * 1000)) if seconds > 0 else 0


class RedisStore(Store):
    """A store kept in Redis 5.0+; see ``docs/broker-redis.rst`` for the key layout.

    ``options`` are redis-py client arguments (``socket_timeout``, ``ssl_ca_certs``...).
    """

    kind = "redis"
    # redis-py pools open new sockets in a forked child; the result listener its own too.
    survives_fork = True

    def __init__(self, url: str, *, key_prefix: str = "flask_tasks", **options: Any) -> None:
        self.url = hide_password(url)
        self.keys = self._new_keys(key_prefix)
        self._connection = self._open(url, options)
        self._client = self._connection.client
        self._scripts = self._new_scripts(self._client)
        self._watchers = self._new_watchers(self._client)
        self._server_checked = False
        self._check_lock = threading.Lock()

    # Hooks the Redis Cluster variant (redis_cluster_store.py) replaces.

    def _new_keys(self, key_prefix: str) -> RedisKeys:
        return RedisKeys(key_prefix)

    def _open(self, url: str, options: dict[str, Any]) -> RedisConnection:
        return open_connection(url, options)

    def _new_scripts(self, client: redis.Redis) -> RedisScripts:
        return RedisScripts(client)

    def _new_watchers(self, client: redis.Redis) -> Watchers:
        return ResultListener(client)

    def _slot_client(self, key: str) -> redis.Redis:
        """The client for a pipeline of commands on ``key``'s slot (with TIME)."""
        return self._client

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

    def _record_call(self, task_id: str, record: bytes, ttl: float) -> ScriptCall:
        keys = [self.keys.result(task_id)]
        return self._scripts.set_result, keys, [record, milliseconds(ttl), self._channel(task_id)]

    def _channel(self, task_id: str) -> str:
        return self.keys.result_channel(task_id)

    # -- result records -------------------------------------------------------------------

    @operational
    def set_result(self, task_id: str, record: bytes, ttl: float) -> None:
        script, keys, args = self._record_call(task_id, record, ttl)
        script(keys, args)

    @operational
    def set_results(self, records: Mapping[str, bytes], ttl: float) -> None:
        """One pipelined round trip of ``set_result.lua`` calls."""
        calls = [self._record_call(task_id, record, ttl) for task_id, record in records.items()]
        if len(calls) == 1:
            script, keys, args = calls[0]
            script(keys, args)
        elif calls:
            self._scripts.pipelined(self._client, calls)

    fences_records = True

    @operational
    def fence(self, task_id: str, token: str, ttl: float) -> None:
        key = self.keys.fence(task_id)
        if ttl > 0:
            self._client.set(key, token.encode(), px=max(1, milliseconds(ttl)))
        else:
            self._client.set(key, token.encode())

    @operational
    def set_results_fenced(self, records: Mapping[str, tuple[bytes, str]], ttl: float) -> list[str]:
        """One pipelined round trip of ``set_result.lua`` calls, each checking its fence."""
        calls: list[ScriptCall] = []
        for task_id, (record, token) in records.items():
            script, keys, args = self._record_call(task_id, record, ttl)
            calls.append((script, [*keys, self.keys.fence(task_id)], [*args, token]))
        if len(calls) == 1:
            script, keys, args = calls[0]
            results = [script(keys, args)]
        elif calls:
            results = self._scripts.pipelined(self._client, calls)
        else:
            return []
        return [task_id for task_id, done in zip(records, results) if done == 0]

    @operational
    def get_result(self, task_id: str) -> bytes | None:
        return cast("bytes | None", self._client.get(self.keys.result(task_id)))

    @operational
    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        if not task_ids:
            return []
        records = self._client.mget([self.keys.result(task_id) for task_id in task_ids])
        return cast("list[bytes | None]", records)

    @operational
    def forget_result(self, task_id: str) -> None:
        self._scripts.forget_result([self.keys.result(task_id)], [self._channel(task_id)])

    @operational
    def watch_result(self, task_id: str, last: bytes | None, timeout: float) -> bytes | None:
        key = self.keys.result(task_id)
        if timeout <= 0:
            return cast("bytes | None", self._client.get(key))
        # Callers (AsyncResult.get, the status endpoint) have just read the record, so
        # subscribe first and read once: one round trip fewer than reading before too.
        deadline = self.now() + timeout
        with self._watchers.listening(self._channel(task_id)) as inbox:
            current = cast("bytes | None", self._client.get(key))
            while True:
                remaining = deadline - self.now()
                if current != last or remaining <= 0:
                    return current
                published = inbox.take(remaining)
                if published is None:
                    continue  # timed out: the deadline check returns the current record
                if published:  # a write publishes the record itself
                    current = published
                    continue
                # A deletion, or the listener lost its connection (this channel is no
                # longer subscribed): return what is there now, the caller watches again.
                return cast("bytes | None", self._client.get(key))

    # -- revocation -----------------------------------------------------------------------

    @operational
    def revoke(self, task_ids: Sequence[str], ttl: float, terminate: bool = False) -> None:
        if not task_ids or ttl <= 0:
            return
        now = self.now()
        self._scripts.revoke(
            [self.keys.revoked, self.keys.terminate],
            [now, now + ttl, "1" if terminate else "0", *task_ids],
        )

    def _marked(self, key: str, task_ids: Sequence[str]) -> set[str]:
        """Those of ``task_ids`` whose score in the sorted set ``key`` is still ahead."""
        if not task_ids:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.zscore(key, task_id)
        now = self.now()
        return {
            task_id
            for task_id, expires in zip(task_ids, pipe.execute())
            if expires is not None and expires > now
        }

    @operational
    def revoked(self, task_ids: Sequence[str]) -> set[str]:
        return self._marked(self.keys.revoked, task_ids)

    @operational
    def terminating(self, task_ids: Sequence[str]) -> set[str]:
        return self._marked(self.keys.terminate, task_ids)

    # -- counters, claims, heartbeats -----------------------------------------------------

    @operational
    def incr(self, key: str, ttl: float) -> int:
        return int(self._scripts.incr([self.keys.counter(key)], [max(1, milliseconds(ttl))]))

    @operational
    def claim(self, key: str, ttl: float) -> bool:
        claimed = self._client.set(
            self.keys.claim(key), b"1", nx=True, px=max(1, milliseconds(ttl))
        )
        return bool(claimed)

    @operational
    def server_time(self) -> float:
        seconds, microseconds = self._slot_client(self.keys.workers).time()
        return seconds + microseconds / 1e6

    @operational
    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        """Expiry by the server's clock (``TIME`` in the script), not the worker's."""
        self._scripts.heartbeat(
            [self.keys.workers, self.keys.workers_expiry],
            [worker, info, ttl, EXPIRED_WORKERS_BATCH],
        )

    @operational
    def workers(self) -> dict[str, bytes]:
        pipe = self._slot_client(self.keys.workers).pipeline(transaction=False)
        pipe.zrange(self.keys.workers_expiry, 0, -1, withscores=True)
        pipe.hgetall(self.keys.workers)
        pipe.time()
        expiries, infos, (seconds, microseconds) = pipe.execute()
        now = seconds + microseconds / 1e6
        # A worker dropped as expired between the reads is left out.
        return {
            name.decode(): infos[name]
            for name, expires_at in cast("list[tuple[bytes, float]]", expiries)
            if expires_at > now and name in infos
        }

    @operational
    def set_value(self, namespace: str, key: str, value: bytes | None) -> None:
        if value is None:
            self._client.hdel(self.keys.values(namespace), key)
        else:
            self._client.hset(self.keys.values(namespace), key, value)

    @operational
    def get_values(self, namespace: str) -> dict[str, bytes]:
        stored = cast("dict[bytes, bytes]", self._client.hgetall(self.keys.values(namespace)))
        return {key.decode(): value for key, value in stored.items()}

    # -- connection -----------------------------------------------------------------------

    @operational
    def ping(self) -> None:
        self._client.ping()

    def close(self) -> None:
        self._watchers.close()
        self._connection.close()

    def disconnect(self) -> None:
        self._connection.disconnect()

    def after_fork(self) -> None:
        self._check_lock = threading.Lock()  # another thread may have held it at the fork
