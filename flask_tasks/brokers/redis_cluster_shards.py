"""Shard channels (``SSUBSCRIBE``) on a Redis 7+ Cluster: wake-ups and result notifications.

On a cluster whose masters all run Redis 7 or newer, the scripts ``SPUBLISH`` on shard
channels in the slot of the keys they change: a queue's wake-ups (a channel named after
its wake list) and a task's result record (``p:channel:result:{task_id}``). A shard
message is delivered by the master holding its slot only, with no cluster-bus broadcast.

A process keeps one ``SSUBSCRIBE`` connection and one listener thread per master,
shared by every waiter (consumers waiting on several queues, ``watch_result`` callers),
which register a callback per channel. Wake channels stay subscribed between waits (a
worker waits on the same queues again and again); result channels are unsubscribed when
their last watcher leaves. Each channel is subscribed with a command of its own (one
``SSUBSCRIBE`` takes channels of one slot).

On older servers the same listeners serve plain channels (``SUBSCRIBE`` on one node,
which hears a ``PUBLISH`` from any), with ``sharded=False``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Callable

import redis
from redis.client import PubSub
from redis.cluster import RedisCluster

from .redis_pubsub import CONFIRM_TIMEOUT, Inbox

#: Called with each message's payload (b"" when the connection broke: read again).
Deliver = Callable[[bytes], None]


class _Master:
    """One master's SSUBSCRIBE connection, its listener thread and its channels' callbacks."""

    def __init__(self, client: redis.Redis, sharded: bool) -> None:
        self.pubsub: PubSub = client.pubsub()  # type: ignore[no-untyped-call]
        self.subscribe = self.pubsub.ssubscribe if sharded else self.pubsub.subscribe
        self.unsubscribe = self.pubsub.sunsubscribe if sharded else self.pubsub.unsubscribe
        self.kinds = ("ssubscribe", "smessage") if sharded else ("subscribe", "message")
        self.lock = threading.Lock()
        self.confirmed: dict[bytes, threading.Event] = {}
        self.waiters: dict[bytes, list[Deliver]] = {}
        self.broken = False
        self.thread = threading.Thread(target=self._listen, name="flask-tasks-shards", daemon=True)
        self.started = False

    def add(self, channels: Sequence[bytes], deliver: Deliver) -> None:
        """Register ``deliver`` for ``channels``; returns once the master confirmed them."""
        with self.lock:
            pending = []
            for channel in channels:
                if channel not in self.confirmed:
                    self.confirmed[channel] = threading.Event()
                    self.subscribe(channel)
                self.waiters.setdefault(channel, []).append(deliver)
                pending.append(self.confirmed[channel])
            if not self.started:
                self.started = True
                self.thread.start()
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        for confirmed in pending:
            if not confirmed.wait(max(0.0, deadline - time.monotonic())) or self.broken:
                raise redis.ConnectionError("Redis did not confirm a subscription")

    def remove(self, channels: Sequence[bytes], deliver: Deliver, keep: bool) -> None:
        """Drop ``deliver``; unless ``keep``, unsubscribe channels nobody waits on."""
        with self.lock:
            for channel in channels:
                waiting = self.waiters.get(channel, [])
                with contextlib.suppress(ValueError):
                    waiting.remove(deliver)
                if not waiting and not keep and not self.broken:
                    self.waiters.pop(channel, None)
                    self.confirmed.pop(channel, None)
                    with contextlib.suppress(redis.RedisError, OSError):
                        self.unsubscribe(channel)

    def _listen(self) -> None:
        while not self.broken:
            try:
                message = self.pubsub.get_message(timeout=1.0)
            except Exception:  # closed under us, or the connection broke
                self._break()
                return
            if not message:
                continue
            with self.lock:
                channel = message["channel"]
                if message["type"] == self.kinds[0] and channel in self.confirmed:
                    self.confirmed[channel].set()
                elif message["type"] == self.kinds[1]:
                    for deliver in self.waiters.get(channel, ()):
                        deliver(message["data"] or b"")

    def _break(self) -> None:
        """Tell every waiter to read again and fail every unconfirmed subscriber; the
        next waiter opens a new connection."""
        with self.lock:
            self.broken = True
            callbacks = [deliver for waiting in self.waiters.values() for deliver in waiting]
            events = list(self.confirmed.values())
        for deliver in callbacks:
            deliver(b"")
        for event in events:
            event.set()

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(redis.RedisError, OSError):
            self.pubsub.close()


class ShardListeners:
    """The shard-channel connections of one process, or (``sharded=False``) its one
    plain-channel connection (see the module docs)."""

    def __init__(self, cluster: RedisCluster, sharded: bool = True) -> None:
        self._cluster = cluster
        self._sharded = sharded
        self._lock = threading.Lock()
        self._masters: dict[str, _Master] = {}
        self._pid = os.getpid()

    @contextmanager
    def listening(self, channels: Sequence[str], deliver: Deliver, keep: bool) -> Iterator[None]:
        """``deliver`` gets what is published on any of ``channels`` until the block
        ends; every channel is subscribed (and confirmed) before the block starts."""
        by_master: dict[str, tuple[_Master, list[bytes]]] = {}
        for channel in channels:
            if self._sharded:
                node = self._cluster.get_node_from_key(channel)  # type: ignore[no-untyped-call]
            else:  # any node hears every plain PUBLISH
                node = self._cluster.get_default_node()  # type: ignore[no-untyped-call]
            if node.name not in by_master:
                by_master[node.name] = (self._master(node), [])
            by_master[node.name][1].append(channel.encode())
        added: list[tuple[_Master, list[bytes]]] = []
        try:
            for master, names in by_master.values():
                added.append((master, names))
                master.add(names, deliver)
            yield
        finally:
            for master, names in added:
                master.remove(names, deliver, keep)

    def _master(self, node: object) -> _Master:
        name = str(getattr(node, "name", node))
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours
                self._masters, self._pid = {}, os.getpid()
            master = self._masters.get(name)
            if master is None or master.broken:
                client = self._cluster.get_redis_connection(node)  # type: ignore[arg-type]
                master = self._masters[name] = _Master(client, self._sharded)
            return master

    def close(self) -> None:
        with self._lock:
            masters, self._masters = list(self._masters.values()), {}
        if self._pid == os.getpid():
            for master in masters:
                master.close()


class ChannelResults:
    """``watch_result`` waiting on a task's channel (the cluster store's watchers)."""

    def __init__(self, listeners: ShardListeners) -> None:
        self._listeners = listeners

    @contextmanager
    def listening(self, channel: str) -> Iterator[Inbox]:
        inbox = Inbox()
        with self._listeners.listening([channel], inbox.deliver, keep=False):
            yield inbox

    def close(self) -> None:
        """The listeners belong to the store, which closes them."""
