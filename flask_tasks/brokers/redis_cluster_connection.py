"""Opening a Redis Cluster client for ``redis+cluster://`` URLs.

URL form::

    redis+cluster://[[user]:password@]host:port[,host:port...][/0]

The hosts are start-up nodes: any reachable one tells the client the whole cluster.
A cluster has database 0 only; redis-py options go in ``TASKS_BROKER_OPTIONS``.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, cast
from urllib.parse import unquote

import redis
from redis.cluster import REDIS_ALLOWED_KEYS, ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from ..exceptions import ImproperlyConfigured, OperationalError
from .base import hide_password
from .redis_connection import RedisConnection, client_options

SCHEME = "redis+cluster://"
_EXAMPLE = "redis+cluster://[:password@]host:port[,host:port...]"
#: Options a cluster client takes: its own, and those it passes on to each node's client.
_ACCEPTED = (set(REDIS_ALLOWED_KEYS) | set(inspect.signature(RedisCluster.__init__).parameters)) - {
    "self",
    "kwargs",
    "host",
    "port",
    "startup_nodes",
}
_ADDRESS = re.compile(r"^\[?(?P<host>[^\]\[]+?)\]?:(?P<port>\d+)$")


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The start-up nodes of a ``redis+cluster://`` URL and its credentials (as client
    keyword arguments); ImproperlyConfigured naming what is wrong otherwise."""
    shown = hide_password(url)
    if not url.lower().startswith(SCHEME):
        raise ImproperlyConfigured(f"{shown!r} is not a Redis Cluster URL ({_EXAMPLE})")
    rest = url[len(SCHEME) :]
    if "?" in rest:
        raise ImproperlyConfigured(
            f"Redis Cluster URL {shown!r} has query options; pass redis-py options in "
            "TASKS_BROKER_OPTIONS instead"
        )
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ImproperlyConfigured(
            f"Redis Cluster URL {shown!r} names database {path.strip('/')!r}; a cluster "
            f"has database 0 only ({_EXAMPLE})"
        )
    credentials, _, hosts = netloc.rpartition("@")
    kwargs: dict[str, Any] = {}
    if credentials:
        username, _, password = credentials.partition(":")
        kwargs["username"] = unquote(username) or None
        kwargs["password"] = unquote(password) or None
    nodes = []
    for text in hosts.split(","):
        match = _ADDRESS.match(text.strip())
        if not match or not 0 < int(match.group("port")) < 65536:
            raise ImproperlyConfigured(
                f"Redis Cluster URL {shown!r} has a bad node address {text!r}: name each "
                f"node as host:port ({_EXAMPLE})"
            )
        nodes.append((match.group("host"), int(match.group("port"))))
    return nodes, kwargs


def open_cluster(url: str, options: dict[str, Any]) -> tuple[RedisConnection, RedisCluster]:
    """A cluster client for ``url``: the client as :class:`.RedisConnection` (for the code
    shared with the single-server broker) and as :class:`RedisCluster` (for the rest).

    redis-py asks a start-up node for the slot map at once, so an unreachable cluster
    fails here, with OperationalError.
    """
    nodes, credentials = parse_cluster_url(url)
    # The cluster client drops arguments it does not know, silently: refuse them here.
    unknown = sorted(set(options) - _ACCEPTED)
    if unknown:
        raise ImproperlyConfigured(
            "TASKS_BROKER_OPTIONS has options the redis-py cluster client does not take: "
            + ", ".join(unknown)
        )
    kwargs = client_options({**credentials, **options})
    try:
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],  # type: ignore[no-untyped-call]
            **kwargs,
        )
    except TypeError as exc:
        raise ImproperlyConfigured(
            f"TASKS_BROKER_OPTIONS has an option redis-py refuses: {exc}"
        ) from None
    except (redis.RedisError, RedisClusterException) as exc:
        raise OperationalError(
            f"Cannot reach the Redis Cluster at {hide_password(url)} ({exc}); check the URL "
            "and that the cluster is up"
        ) from None
    return RedisConnection(cast(redis.Redis, cluster)), cluster


def node_client(cluster: RedisCluster, key: str) -> redis.Redis:
    """A plain client of the primary that holds ``key``'s slot (for commands the cluster
    client cannot pipeline or route, all on that one slot)."""
    node = cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
    return cluster.get_redis_connection(node)


def pipeline(cluster: RedisCluster) -> Any:
    """A non-transactional cluster pipeline: each command goes to its key's node, the
    nodes in parallel (one round trip each)."""
    return cluster.pipeline(transaction=False)  # type: ignore[no-untyped-call]
