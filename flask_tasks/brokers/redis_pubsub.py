"""Pub/sub listening for the Redis broker: pooled, fork-aware subscriber connections.

``wait`` and ``watch_result`` block on a pub/sub connection instead of polling. Opening and
subscribing a connection costs round trips, so idle subscribers are kept and reused: a
worker's ``wait`` finds its subscriber still listening to the same queues. A subscriber is
subscribed (and the server has confirmed it) before the caller reads the state it waits on,
so a write that lands between the read and the wait still wakes it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import redis
from redis.client import PubSub

#: How long to wait for the server to confirm a subscription.
CONFIRM_TIMEOUT = 5.0


class Subscriber:
    """One pub/sub connection and the channels it listens to."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.channels: frozenset[bytes] = frozenset()

    def listen_to(self, channels: frozenset[bytes]) -> None:
        """Listen to exactly ``channels``; returns once the server confirmed them.

        Messages already received are dropped: the caller reads the state afterwards.
        """
        stale = self.channels - channels
        missing = channels - self.channels
        if stale:
            self.pubsub.unsubscribe(*stale)  # type: ignore[no-untyped-call]
        if missing:
            self.pubsub.subscribe(*missing)
        self.channels = channels
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        unconfirmed = set(missing)
        while unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.TimeoutError("Redis did not confirm a SUBSCRIBE")
            message = self.pubsub.get_message(timeout=remaining)
            if message and message["type"] == "subscribe":
                unconfirmed.discard(message["channel"])
        while self.pubsub.get_message(timeout=0) is not None:
            pass

    def stop_listening(self) -> None:
        """Unsubscribe from everything (the confirmations are skipped on next use)."""
        if self.channels:
            self.pubsub.unsubscribe(*self.channels)  # type: ignore[no-untyped-call]
            self.channels = frozenset()

    def wait(self, timeout: float) -> bool:
        """Block until a message arrives on one of the channels (True) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            message = self.pubsub.get_message(timeout=remaining)
            if message and message["type"] == "message" and message["channel"] in self.channels:
                return True

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):  # already broken
            self.pubsub.close()


class SubscriberPool:
    """Idle subscribers of one client, reused across calls and dropped after a fork."""

    def __init__(self, client: redis.Redis, keep_listening: bool, max_idle: int = 8) -> None:
        self._client = client
        self._keep_listening = keep_listening
        self._max_idle = max_idle
        self._idle: list[Subscriber] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    @contextmanager
    def listening(self, channels: Sequence[str]) -> Iterator[Subscriber]:
        """A subscriber listening to ``channels`` (confirmed), returned to the pool after."""
        wanted = frozenset(channel.encode() for channel in channels)
        subscriber = self._take(wanted)
        try:
            subscriber.listen_to(wanted)
            yield subscriber
            if not self._keep_listening:
                subscriber.stop_listening()
        except BaseException:
            subscriber.close()
            raise
        self._give_back(subscriber)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for subscriber in idle:
            subscriber.close()

    def _take(self, wanted: frozenset[bytes]) -> Subscriber:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not read from, close or return its parent's
                # connections (they belong to the parent's pool): it just forgets them.
                self._idle, self._pid = [], os.getpid()
            for index, subscriber in enumerate(self._idle):
                if subscriber.channels == wanted:
                    return self._idle.pop(index)
            if self._idle:
                return self._idle.pop()
        return Subscriber(self._client.pubsub())  # type: ignore[no-untyped-call]

    def _give_back(self, subscriber: Subscriber) -> None:
        with self._lock:
            if not self._closed and self._pid == os.getpid() and len(self._idle) < self._max_idle:
                self._idle.append(subscriber)
                return
        subscriber.close()


class Inbox:
    """What one ``watch_result`` waiter is told: the latest record published (an empty
    payload means "deleted, read it again")."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.payload: bytes = b""

    def deliver(self, payload: bytes) -> None:
        self.payload = payload
        self.arrived.set()

    def take(self, timeout: float) -> bytes | None:
        """The latest payload once one arrives, or None after ``timeout`` seconds."""
        if not self.arrived.wait(timeout):
            return None
        self.arrived.clear()
        return self.payload


class Watchers(Protocol):
    """What ``watch_result`` waits with: :class:`ResultListener`, or on a Redis 7+
    Cluster its shard-channel counterpart (``redis_cluster_shards.py``)."""

    def listening(self, channel: str) -> AbstractContextManager[Inbox]: ...

    def close(self) -> None: ...


class _Channel:
    """Waiters of one result channel, and whether the server confirmed the subscription."""

    def __init__(self) -> None:
        self.waiters: set[Inbox] = set()
        self.confirmed = threading.Event()


class ResultListener:
    """One pub/sub connection and one thread that wake every ``watch_result`` waiter of a
    process, however many there are (a web process may hold thousands of SSE streams).

    Waiters subscribe their task's channel on the shared connection (reference-counted)
    and wait on an inbox the listener thread fills with each published record. Only the
    listener thread reads the connection; waiters only send SUBSCRIBE/UNSUBSCRIBE.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._channels: dict[bytes, _Channel] = {}
        self._pubsub: PubSub | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False

    @contextmanager
    def listening(self, channel: str) -> Iterator[Inbox]:
        """An inbox receiving what is published on ``channel``; subscribed (and confirmed
        by the server) before this yields, so no write after it can be missed."""
        name = channel.encode()
        inbox = Inbox()
        with self._lock:
            pubsub = self._ensure_running()
            entry = self._channels.get(name)
            if entry is None:
                entry = self._channels[name] = _Channel()
                pubsub.subscribe(name)
            entry.waiters.add(inbox)
        try:
            if not entry.confirmed.wait(CONFIRM_TIMEOUT):
                raise redis.TimeoutError("Redis did not confirm a SUBSCRIBE")
            yield inbox
        finally:
            with self._lock:
                entry.waiters.discard(inbox)
                if not entry.waiters and self._channels.get(name) is entry:
                    del self._channels[name]
                    if self._pubsub is not None:
                        with contextlib.suppress(redis.RedisError, OSError):
                            self._pubsub.unsubscribe(name)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None and self._pid == os.getpid():
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()

    def _ensure_running(self) -> PubSub:
        """The shared connection, with its listener thread started (lock held)."""
        if self._pid != os.getpid():  # a forked child: the parent's socket is not ours
            self._pid, self._pubsub, self._thread = os.getpid(), None, None
            self._channels.clear()
        if self._closed:
            raise redis.ConnectionError("the broker is closed")
        if self._pubsub is None:
            self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._listen,
                args=(self._pubsub,),
                name="flask-tasks-results",
                daemon=True,
            )
            self._thread.start()
        return self._pubsub

    def _listen(self, pubsub: PubSub) -> None:
        while not self._closed and self._pubsub is pubsub:
            try:
                message = pubsub.get_message(timeout=1.0)
            except Exception:  # closed under us, or the connection broke
                if not self._closed:
                    self._reconnect(pubsub)
                return
            if message is None:
                continue
            with self._lock:
                entry = self._channels.get(message["channel"])
                if entry is None:
                    continue
                if message["type"] == "subscribe":
                    entry.confirmed.set()
                elif message["type"] == "message":
                    for inbox in entry.waiters:
                        inbox.deliver(message["data"])

    def _reconnect(self, broken: PubSub) -> None:
        """Lost the connection: wake every waiter (they read again) and start afresh."""
        with self._lock:
            if self._pubsub is not broken:
                return
            self._pubsub, self._thread = None, None
            waiting = list(self._channels.items())
            self._channels.clear()
        with contextlib.suppress(Exception):
            broken.close()
        for _name, entry in waiting:
            entry.confirmed.set()
            for inbox in entry.waiters:
                inbox.deliver(b"")  # read again
