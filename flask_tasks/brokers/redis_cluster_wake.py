"""Waking idle consumers on a Redis Cluster (``redis+cluster://``).

``BLPOP`` on wake lists of several slots is a CROSSSLOT error on a cluster, so:

- a consumer of one queue waits exactly as on one server: :class:`.Waker` (``BLPOP`` on
  the queue's wake list) on a client of the primary holding the queue's slot, so one
  message wakes one consumer;
- a consumer of several queues subscribes to one channel per queue, named after its
  wake list: the cluster's scripts publish a wake-up there too (``WAKE_PUBLISH`` in
  ``lua/lib.lua``). On Redis 7+ these are shard channels (``SPUBLISH``/``SSUBSCRIBE``,
  :mod:`.redis_cluster_shards`, shared with result watchers): a wake-up stays on the
  queue's master. On older servers they are plain channels, which reach subscribers on
  any node, at the cost of one cluster-bus message per publish. The subscriptions stay
  open between waits; each wait reads whether work is ready (one pipelined round trip
  over the queues' masters) after the server confirmed them, so nothing published in
  between is missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

from redis.cluster import RedisCluster

from .redis_cluster_connection import node_client, pipeline
from .redis_cluster_shards import ShardListeners
from .redis_cluster_store import ClusterKeys
from .redis_wake import Waker


class ClusterWaker:
    """``Transport.wait`` for the Redis Cluster broker (see the module docs)."""

    def __init__(
        self,
        cluster: RedisCluster,
        keys: ClusterKeys,
        listeners: Callable[[], ShardListeners],
    ) -> None:
        self._cluster = cluster
        self.keys = keys
        self._single: dict[tuple[str, str], Waker] = {}
        #: The store's channel listeners (shard or plain channels, known once the servers are).
        self.listeners = listeners

    def single(self, queue: str) -> Waker:
        """The waker of one queue, on the primary that holds its slot now."""
        queue_keys = self.keys.queue(queue)
        node = self._cluster.get_node_from_key(queue_keys.meta)  # type: ignore[no-untyped-call]
        waker = self._single.get((queue, node.name))
        if waker is None:
            client = self._cluster.get_redis_connection(node)
            waker = self._single[(queue, node.name)] = Waker(client, queue_keys)
        return waker

    def reserved(self, queues: Sequence[str], short: bool, next_due: bytes) -> None:
        """Note a reserve by this thread (a consumer of one queue blocks at once after a
        short one, as on one server)."""
        if len(queues) == 1:
            self.single(queues[0]).reserved(queues, short, next_due)

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        if len(queues) == 1:
            self.single(queues[0]).wait(queues, timeout)
            return
        deadline = time.monotonic() + timeout
        channels = [self.keys.queue(queue).wake_list(queue) for queue in queues]
        woken = threading.Event()
        with self.listeners().listening(channels, lambda _payload: woken.set(), keep=True):
            due = self._next_due(queues)
            if due is not None:
                woken.wait(max(0.0, min(deadline, time.monotonic() + due) - time.monotonic()))

    def _next_due(self, queues: Sequence[str]) -> float | None:
        """None when work is ready in ``queues``; else the seconds until the earliest
        delayed message or lease of theirs falls due (by its node's clock), or inf."""
        pipe = pipeline(self._cluster)
        for queue in queues:
            queue_keys = self.keys.queue(queue)
            pipe.exists(*queue_keys.ready_lists(queue))
            pipe.zrange(queue_keys.delayed, 0, 0, withscores=True)
            pipe.zrange(queue_keys.leases, 0, 0, withscores=True)
        replies: list[Any] = pipe.execute()
        earliest: tuple[float, str] | None = None
        for index, queue in enumerate(queues):
            ready, delayed, leased = replies[index * 3 : index * 3 + 3]
            if ready:
                return None
            for first in (delayed, leased):
                if first and (earliest is None or first[0][1] < earliest[0]):
                    earliest = (float(first[0][1]), queue)
        if earliest is None:
            return float("inf")
        keys = self.keys.queue(earliest[1])
        seconds, microseconds = node_client(self._cluster, keys.delayed).time()
        return max(0.0, earliest[0] - (seconds + microseconds / 1e6))
