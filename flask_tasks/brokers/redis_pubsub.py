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
from contextlib import contextmanager

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
            self.pubsub.unsubscribe(*stale)
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
            self.pubsub.unsubscribe(*self.channels)
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
                # A forked child must not read from its parent's sockets.
                stale, self._idle, self._pid = self._idle, [], os.getpid()
                for subscriber in stale:
                    subscriber.close()
            for index, subscriber in enumerate(self._idle):
                if subscriber.channels == wanted:
                    return self._idle.pop(index)
            if self._idle:
                return self._idle.pop()
        return Subscriber(self._client.pubsub())

    def _give_back(self, subscriber: Subscriber) -> None:
        with self._lock:
            if not self._closed and self._pid == os.getpid() and len(self._idle) < self._max_idle:
                self._idle.append(subscriber)
                return
        subscriber.close()
