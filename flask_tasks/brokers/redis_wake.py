"""Waking idle consumers of the Redis broker: one wake list per queue, and ``BLPOP``.

Every script that makes a message ready pushes one token onto its queue's wake list (a
``"d"`` when a delayed message becomes the earliest), and an idle consumer blocks in
``BLPOP`` on the wake lists of its queues: a message wakes one consumer, not every idle
one. ``reserve.lua`` trims a wake list to its queue's ready count, and empties it when it
finds nothing ready, so tokens do not outlive their messages.

After a ``reserve`` that came back short (fewer than asked for: nothing is left ready),
the same thread's ``wait`` blocks at once: that reserve reported when the earliest
delayed message or lease falls due, and whatever was made ready since left a token.
Otherwise ``wait`` first reads whether work is ready and when the earliest due time is
(one pipelined round trip).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Optional

import redis

from .redis_keys import RedisKeys


class Waker:
    """``Transport.wait`` for the Redis broker (see the module docs)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self.keys = keys
        #: Whether BLPOP takes fractions of a second (Redis 6+); asked on first wait.
        self.fractional: Optional[bool] = None
        self._local = threading.local()

    def reserved(self, queues: Sequence[str], short: bool, next_due: bytes) -> None:
        """Note a reserve by this thread: when it came back short, ``next_due`` is the
        seconds until the earliest due time (empty: none)."""
        if not short:
            self._local.hint = None
        else:
            due = float(next_due) if next_due else math.inf
            self._local.hint = (tuple(queues), time.monotonic() + due)

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        wake_lists = [self.keys.wake_list(queue) for queue in queues]
        hint = getattr(self._local, "hint", None)
        self._local.hint = None
        if hint is not None and hint[0] == tuple(queues):
            # Nothing was left ready at that reserve: block at once.
            woken_for_delay = self._block(wake_lists, min(deadline, hint[1]) - time.monotonic())
            if not woken_for_delay:
                return
        while True:
            pipe = self._client.pipeline(transaction=False)
            # The ready counts: one key, whatever the number of queues and priorities
            # (the lists may hold stale entries, which are no work).
            pipe.hmget(self.keys.ready, list(queues))
            # A delayed message falling due, or a lease running out, may make work ready.
            pipe.zrange(self.keys.delayed, 0, 0, withscores=True)
            pipe.zrange(self.keys.leases, 0, 0, withscores=True)
            pipe.time()  # due times are the server's: judge them by its clock
            counts, *earliest, (seconds, microseconds) = pipe.execute()
            if any(int(count or 0) > 0 for count in counts):
                return
            now = seconds + microseconds / 1e6
            remaining = deadline - time.monotonic()
            for first in earliest:
                if first:
                    remaining = min(remaining, max(0.0, first[0][1] - now))
            # A message published since the read above left a token: BLPOP returns.
            if not self._block(wake_lists, remaining):
                return

    def _block(self, wake_lists: list[str], timeout: float) -> bool:
        """BLPOP for up to ``timeout``; True when woken by a ``"d"`` (a delayed message
        is the earliest now: time the wait again), False to return."""
        if timeout <= 0:
            return False
        popped = self._client.blpop(wake_lists, self.block_for(timeout))
        return popped is not None and popped[1] == b"d"

    def block_for(self, timeout: float) -> float:
        """``timeout`` as a BLPOP timeout: within the socket timeout, never 0 (forever);
        whole seconds on Redis 5, which takes no fractions (its waits end up to 1 s late)."""
        if self.fractional is None:
            version = str(self._client.info("server").get("redis_version", "0"))
            self.fractional = int(version.split(".", 1)[0] or 0) >= 6
        socket_timeout = self._client.connection_pool.connection_kwargs.get("socket_timeout")
        if socket_timeout:
            timeout = min(timeout, max(0.001, float(socket_timeout) / 2))
        if self.fractional:
            return max(0.001, round(timeout, 3))
        return float(max(1, math.ceil(timeout)))
