"""Every Redis key and pub/sub channel name the Redis broker uses, defined in one place.

All names start with one base, ``{<key_prefix>}:``. The braces make the prefix a Redis
Cluster *hash tag*: every key of one app hashes to the same slot, so each Lua script's keys
live on one node. A prefix that already holds a tag (``{...}``) is used as given.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import MAX_PRIORITY, MIN_PRIORITY

#: Core keys, in the order every message script receives them as KEYS[1..8].
CORE_KEY_COUNT = 8


class RedisKeys:
    """Key and channel names under one prefix."""

    def __init__(self, key_prefix: str) -> None:
        has_tag = "{" in key_prefix and "}" in key_prefix.split("{", 1)[1]
        self.base = key_prefix if has_tag else f"{{{key_prefix}}}"
        #: Hash: message id -> "generation:priority:queue".
        self.meta = f"{self.base}:messages:meta"
        #: Hash: message id -> encoded body.
        self.bodies = f"{self.base}:messages:body"
        #: Sorted set: delayed message id, scored by eta.
        self.delayed = f"{self.base}:delayed"
        #: Sorted set: leased message id, scored by lease deadline.
        self.leases = f"{self.base}:leases"
        #: Hash: queue name -> number of ready messages (what ``queue_length`` reads).
        self.ready = f"{self.base}:ready"
        #: Counter handing out generations, which tell current queue entries from stale
        #: ones, and lease tokens.
        self.sequence = f"{self.base}:sequence"
        #: Hash: message id -> "deliveries:token" of its latest lease (``Delivery``).
        self.leased = f"{self.base}:leased"
        #: Hash: "priority:queue" -> 1 for ready lists known to be empty (reserve skips them).
        self.empty = f"{self.base}:ready:empty"
        #: Hash: message id -> packed dead letter.
        self.dead = f"{self.base}:dead"
        #: Sorted set: dead letter id, scored by the time it failed.
        self.dead_index = f"{self.base}:dead:index"
        #: Sorted set: revoked task id, scored by when the revocation expires (Unix time);
        #: one key, so ``reserve.lua`` can flag revoked deliveries in the same call.
        self.revoked = f"{self.base}:revoked"
        #: Sorted set: task id revoked with terminate, scored by when that mark expires.
        self.terminate = f"{self.base}:terminate"
        #: Hash: worker name -> the info of its last heartbeat.
        self.workers = f"{self.base}:workers"
        #: Sorted set: worker name, scored by when its last heartbeat expires (Unix time).
        self.workers_expiry = f"{self.base}:workers:expiry"
        self._one_message: dict[tuple[str, int], list[str]] = {}

    def core(self) -> list[str]:
        """The eight keys every message script receives first (see ``lua/lib.lua``)."""
        return [
            self.meta,
            self.bodies,
            self.delayed,
            self.leases,
            self.ready,
            self.sequence,
            self.leased,
            self.empty,
        ]

    def one_message(self, queue: str, priority: int) -> list[str]:
        """The KEYS of ``publish_one.lua`` but the result key, made once per queue and
        priority (a delay() loop asks for the same ones): the caller must not change it."""
        keys = self._one_message.get((queue, priority))
        if keys is None:
            if len(self._one_message) > 256:
                self._one_message.clear()
            keys = [*self.core(), self.ready_list(queue, priority), self.wake_list(queue)]
            self._one_message[queue, priority] = keys
        return keys

    def ready_list(self, queue: str, priority: int) -> str:
        """List of ``"generation:id"`` entries ready in ``queue`` at ``priority``."""
        return f"{self.base}:queue:{queue}:{priority}"

    def ready_lists(self, queue: str) -> list[str]:
        """The ready lists of ``queue``, priority 0 first."""
        return [self.ready_list(queue, p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)]

    def wake_list(self, queue: str) -> str:
        """List of wake tokens of ``queue``: one pushed per message made ready, popped
        (``BLPOP``) by one idle consumer each."""
        return f"{self.base}:wake:{queue}"

    def reserve_keys(self, queues: Sequence[str]) -> list[str]:
        """The ready lists then the wake list of each queue, queue by queue (reserve)."""
        return [key for q in queues for key in (*self.ready_lists(q), self.wake_list(q))]

    def result(self, task_id: str) -> str:
        """String: the result record of ``task_id``."""
        return f"{self.base}:result:{task_id}"

    def fence(self, task_id: str) -> str:
        """String: the lease token now running ``task_id`` (``Store.fence``)."""
        return f"{self.base}:fence:{task_id}"

    def counter(self, name: str) -> str:
        """String: the counter ``name`` (``Store.incr``)."""
        return f"{self.base}:counter:{name}"

    def values(self, namespace: str) -> str:
        """Hash: the shared values of ``namespace`` (``Store.set_value``)."""
        return f"{self.base}:values:{namespace}"

    def claim(self, name: str) -> str:
        """String, set with NX and a time to live: the claim ``name`` (``Store.claim``)."""
        return f"{self.base}:claim:{name}"

    # Pub/sub channels are not keys (Cluster broadcasts them), but share the prefix.

    def result_channel(self, task_id: str) -> str:
        """Channel published on every write of ``task_id``'s result record."""
        return f"{self.base}:channel:result:{task_id}"
