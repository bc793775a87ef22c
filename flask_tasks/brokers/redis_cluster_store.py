"""The store half of ``redis+cluster://``: key names that spread over a Redis Cluster.

On one server every key shares the hash tag ``{prefix}`` (:mod:`.redis_keys`). On a
cluster that would put everything on one shard, so here:

- each queue has a key set of its own under the tag ``{prefix:queue}`` (ready lists,
  delayed set, leases, message metas and bodies, dead letters, wake list): the queue's
  scripts touch that one slot, and queues spread over the shards
  (:meth:`ClusterKeys.queue`);
- a result record is ``prefix:result:{task_id}``, a counter ``prefix:counter:{name}``, a
  claim ``prefix:claim:{name}``: each on the slot of its own id or name;
- revocations, terminate marks, worker heartbeats, shared values and the set of queues
  ever published to stay on the one slot ``{prefix}``: they are small and read together.

Every store script touches one key or keys of one slot; result channels are plain pub/sub
channels, which a cluster delivers to subscribers on any node.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from .redis_cluster_connection import node_client, open_cluster, pipeline
from .redis_cluster_shards import ChannelResults, ShardListeners
from .redis_connection import RedisConnection, check_version, parse_version
from .redis_keys import RedisKeys
from .redis_pubsub import Watchers
from .redis_scripts import LUA, RedisScripts, ScriptCall
from .redis_store import RedisStore, operational


class ClusterKeys(RedisKeys):
    """Store key names (each on its own slot where it is per task or name), and the
    per-queue key sets (:meth:`queue`)."""

    def __init__(self, key_prefix: str) -> None:
        #: The prefix without braces: tags are placed here, not by the caller.
        self.name = key_prefix.replace("{", "").replace("}", "") or "flask_tasks"
        super().__init__(self.name)
        #: Set: every queue published to (read by the operations given a bare id).
        self.queues = f"{self.base}:queues"
        self._queues: dict[str, RedisKeys] = {}
        self._lock = threading.Lock()

    def queue(self, queue: str) -> RedisKeys:
        """The keys of ``queue``, all on the slot of the tag ``{prefix:queue}``."""
        keys = self._queues.get(queue)
        if keys is None:
            keys = RedisKeys(f"{{{self.name}:{queue}}}")
            with self._lock:
                if len(self._queues) > 10_000:
                    self._queues.clear()
                self._queues[queue] = keys
        return keys

    def result(self, task_id: str) -> str:
        return f"{self.name}:result:{{{task_id}}}"

    def result_channel(self, task_id: str) -> str:
        return f"{self.name}:channel:result:{{{task_id}}}"

    def fence(self, task_id: str) -> str:
        return f"{self.name}:fence:{{{task_id}}}"  # on its record's slot: one script

    def counter(self, name: str) -> str:
        return f"{self.name}:counter:{{{name}}}"

    def claim(self, name: str) -> str:
        return f"{self.name}:claim:{{{name}}}"


class ClusterScripts(RedisScripts):
    """The Lua commands on a cluster: loaded on every primary, pipelined across nodes
    (each call goes to the node of its keys' slot), wake-ups published with
    ``wake_publish`` (``SPUBLISH`` or ``PUBLISH``; see lib.lua)."""

    def __init__(self, client: redis.Redis, wake_publish: str = "PUBLISH") -> None:
        super().__init__(client, wake_publish=wake_publish)
        if wake_publish == "SPUBLISH":  # records notify on their slot's shard channel too
            for name in ("set_result", "forget_result"):
                source = (LUA / f"{name}.lua").read_text(encoding="utf-8")
                sharded = source.replace('redis.call("PUBLISH", ', 'redis.call("SPUBLISH", ')
                self.all[name] = client.register_script(sharded)
            self.set_result, self.forget_result = self.all["set_result"], self.all["forget_result"]
        source = (LUA / "probe.lua").read_text(encoding="utf-8")
        self.probe = self.all["probe"] = client.register_script(source)

    def preload(self, client: redis.Redis) -> None:
        for script in self.all.values():
            client.script_load(script.script)  # the cluster client sends it to every primary

    @staticmethod
    def _send(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
        cluster = cast(RedisCluster, client)
        pipe = pipeline(cluster)
        for script, keys, args in calls:
            # The cluster pipeline refuses its evalsha() helper, not the command; and
            # routed by its own means, it would ask the server for the keys of each call
            # (COMMAND GETKEYS, a round trip each): the node is named instead.
            node = cluster.get_node_from_key(keys[0])  # type: ignore[no-untyped-call]
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, target_nodes=node)
        return list(pipe.execute(raise_on_error=False))


class RedisClusterStore(RedisStore):
    """A store kept in a Redis Cluster (``redis+cluster://``); see the module docs."""

    kind = "redis-cluster"
    survives_fork = False  # not examined for it: each forked child opens its own
    keys: ClusterKeys
    _cluster: RedisCluster
    #: Whether every master is Redis 7+: wake-ups then go on shard channels (SPUBLISH).
    sharded_pubsub = False

    def _new_keys(self, key_prefix: str) -> ClusterKeys:
        return ClusterKeys(key_prefix)

    def _open(self, url: str, options: dict[str, Any]) -> RedisConnection:
        connection, self._cluster = open_cluster(url, options)
        #: Channel subscribers shared by result watchers and waiters: shard channels on
        #: Redis 7+ (chosen at the server check), else plain ones.
        self._shards = ShardListeners(self._cluster, sharded=True)
        self._plain = ShardListeners(self._cluster, sharded=False)
        return connection

    def _new_scripts(self, client: redis.Redis) -> RedisScripts:
        return ClusterScripts(client)

    def _new_watchers(self, client: redis.Redis) -> Watchers:
        return ChannelResults(self._plain)  # until the servers are known to shard channels

    def listeners(self) -> ShardListeners:
        """Where wake-ups and result notifications are heard: shard or plain channels."""
        return self._shards if self.sharded_pubsub else self._plain

    def _slot_client(self, key: str) -> redis.Redis:
        # The cluster pipeline refuses TIME: the master holding the slot takes it all.
        return node_client(self._cluster, key)

    def _check_server(self) -> None:
        """Refuse a cluster with a primary older than Redis 5.0; choose how wake-ups are
        published (shard channels when every primary has them); preload the scripts on
        every primary."""
        with self._check_lock:
            if self._server_checked:
                return
            infos = self._cluster.info("server", target_nodes=RedisCluster.PRIMARIES)
            if infos and "redis_version" in infos:  # one primary: redis-py unwraps it
                infos = {"node": infos}
            versions = []
            for info in cast("dict[str, dict[str, Any]]", infos).values():
                check_version(info, self.url)
                versions.append(parse_version(str(info.get("redis_version"))))
            if versions and min(versions) >= (7, 0):
                self.sharded_pubsub = True
                self._scripts = ClusterScripts(self._client, "SPUBLISH")
                self._watchers = ChannelResults(self._shards)
            self._scripts.preload(self._client)
            self._server_checked = True

    def close(self) -> None:
        super().close()
        self._shards.close()
        self._plain.close()

    @operational
    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        if not task_ids:
            return []
        keys = [self.keys.result(task_id) for task_id in task_ids]
        return cast("list[bytes | None]", self._cluster.mget_nonatomic(keys))
