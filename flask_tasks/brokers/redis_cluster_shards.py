"""Sharded pub/sub wake-ups for consumers of several queues on a Redis 7+ Cluster.

Each queue's scripts ``SPUBLISH`` a wake-up on a channel named after the queue's wake list:
a shard channel, delivered by the master holding the queue's slot only (no cluster-bus
broadcast). A consumer of several queues listens on every master that holds one of them:
one ``SSUBSCRIBE`` connection and one listener thread per master, shared by every waiter of
the process, which register an event for their channels. Channels stay subscribed
between waits (a worker waits on the same queues again and again), so a wait costs no
subscription round trip after the first.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis
from redis.client import PubSub
from redis.cluster import RedisCluster

from .redis_pubsub import CONFIRM_TIMEOUT


class _Master:
    """One master's SSUBSCRIBE connection, its listener thread and the waiters of its
    channels."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub: PubSub = client.pubsub()  # type: ignore[no-untyped-call]
        self.lock = threading.Lock()
        self.confirmed: dict[bytes, threading.Event] = {}
        self.waiters: dict[bytes, set[threading.Event]] = {}
        self.broken = False
        self.thread = threading.Thread(target=self._listen, name="flask-tasks-wake", daemon=True)
        self.started = False

    def add(self, channels: Sequence[bytes], event: threading.Event) -> None:
        """Register ``event`` for ``channels``; returns once the master confirmed them."""
        with self.lock:
            missing = [channel for channel in channels if channel not in self.confirmed]
            for channel in missing:
                self.confirmed[channel] = threading.Event()
            for channel in channels:
                self.waiters.setdefault(channel, set()).add(event)
            pending = [self.confirmed[channel] for channel in channels]
            for channel in missing:  # one command each: one SSUBSCRIBE takes one slot
                self.pubsub.ssubscribe(channel)
            if not self.started:
                self.started = True
                self.thread.start()
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        for confirmed in pending:
            if not confirmed.wait(max(0.0, deadline - time.monotonic())) or self.broken:
                raise redis.ConnectionError("Redis did not confirm an SSUBSCRIBE")

    def remove(self, channels: Sequence[bytes], event: threading.Event) -> None:
        with self.lock:
            for channel in channels:
                self.waiters.get(channel, set()).discard(event)

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
                if message["type"] == "ssubscribe" and channel in self.confirmed:
                    self.confirmed[channel].set()
                elif message["type"] == "smessage":
                    for event in self.waiters.get(channel, ()):
                        event.set()

    def _break(self) -> None:
        """Wake every waiter (they read the state again) and every unconfirmed
        subscriber (it fails); the next wait opens a new connection."""
        with self.lock:
            self.broken = True
            events = [event for waiting in self.waiters.values() for event in waiting]
            events += list(self.confirmed.values())
        for event in events:
            event.set()

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(redis.RedisError, OSError):
            self.pubsub.close()


class ShardedWakeups:
    """The shard-channel listeners of one process (see the module docs)."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._lock = threading.Lock()
        self._masters: dict[str, _Master] = {}
        self._pid = os.getpid()

    @contextmanager
    def listening(self, channels: Sequence[str]) -> Iterator[threading.Event]:
        """An event set when a wake-up arrives on any of ``channels``; every channel is
        subscribed (and confirmed) before this yields."""
        event = threading.Event()
        by_master: dict[str, tuple[_Master, list[bytes]]] = {}
        for channel in channels:
            node = self._cluster.get_node_from_key(channel)  # type: ignore[no-untyped-call]
            if node.name not in by_master:
                by_master[node.name] = (self._master(node), [])
            by_master[node.name][1].append(channel.encode())
        added: list[tuple[_Master, list[bytes]]] = []
        try:
            for master, names in by_master.values():
                added.append((master, names))
                master.add(names, event)
            yield event
        finally:
            for master, names in added:
                master.remove(names, event)

    def _master(self, node: object) -> _Master:
        name = str(getattr(node, "name", node))
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours
                self._masters, self._pid = {}, os.getpid()
            master = self._masters.get(name)
            if master is None or master.broken:
                client = self._cluster.get_redis_connection(node)  # type: ignore[arg-type]
                master = self._masters[name] = _Master(client)
            return master

    def close(self) -> None:
        with self._lock:
            masters, self._masters = list(self._masters.values()), {}
        if self._pid == os.getpid():
            for master in masters:
                master.close()
