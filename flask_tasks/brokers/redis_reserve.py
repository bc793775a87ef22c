"""Running ``reserve.lua`` for the Redis broker, at a cost that does not grow with the
number of queues consumed.

A call carries 11 keys per queue (its 10 ready lists and its wake list): a worker of 20
queues would send 230 keys on every call, and the server would build a Lua table of them,
while a call takes from one or two queues. So after a call that took all it asked for, the
next carries the keys of only the queues it should take from, by the ready counts the
script returned: the first ones holding ready messages until their counts cover the count
asked, and the next one holding some. It also names the queues before them, which take
precedence: reaching one of those with ready messages (or with due or expired messages),
the script stops ("missing"), and the call is made again with every queue's keys. So is a
call that comes back short (the queues after those named may hold work), and the call
after a short one, which also empties the wake lists of every queue.

Each command (``EVALSHA``, the keys and the arguments) is packed once and sent as bytes
afterwards (see :meth:`.RedisScripts.call`): a worker asks for the same ones again and again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import redis

from .redis_keys import RedisKeys
from .redis_scripts import RedisScripts

#: Most due delayed messages, and most expired leases, one ``reserve`` looks at.
PROMOTE_BATCH = 1000
#: Most sets of queues whose keys (and next plan) are kept.
_LIMIT = 64

Queues = tuple[str, ...]


class ReserveCalls:
    """``reserve.lua`` calls of one broker (thread-safe: any plan it keeps is correct)."""

    def __init__(
        self, client: redis.Redis, scripts: RedisScripts, keys: RedisKeys, records_db: str
    ) -> None:
        self._client = client
        self._scripts = scripts
        self.keys = keys
        self._records_db = records_db
        #: KEYS of reserve.lua by the queues given keys.
        self._keys: dict[Queues, list[str]] = {}
        #: Queues consumed -> the queues the next call gives keys, and the queues it names
        #: (those before them too; () when none come before them). Absent: every queue.
        self._plans: dict[Queues, tuple[Queues, Queues]] = {}

    def run(
        self, queues: Sequence[str], count: int, lease: float
    ) -> tuple[list[Any], list[str], bytes]:
        """Flat (id, meta, body, revoked flag, deliveries, token) groups taken, the queues
        outside ``queues`` holding due or expired messages, and (when it came back short)
        the seconds until the earliest due time."""
        consumed = tuple(queues)
        count = max(0, count)
        keyed, named = self._plans.get(consumed, (consumed, ())) if count > 0 else (consumed, ())
        taken, foreign, next_due, ready, missing = self._call(keyed, named, count, lease)
        seen = named or keyed  # the queues whose ready counts the call read
        if missing or (len(taken) < 6 * count and len(seen) < len(consumed)):
            # A queue without keys holds work first, or the queues after those named may
            # hold some: again with every queue.
            more, also, next_due, ready, _ = self._call(
                consumed, (), count - len(taken) // 6, lease
            )
            taken += more
            foreign += also
            seen = consumed
        else:
            # Due or expired messages of queues consumed after those named: promoted now,
            # as a call with every queue would have (they follow what was taken).
            own = tuple(dict.fromkeys(q.decode() for q in foreign if q.decode() in consumed))
            if own:
                self._call(own, (), 0, lease)
        if count > 0 and len(consumed) > 1:
            plan = self._choose(consumed, seen, ready, count)
            if plan is None:
                self._plans.pop(consumed, None)
            else:
                if len(self._plans) > _LIMIT:
                    self._plans.clear()
                self._plans[consumed] = plan
        return taken, list(dict.fromkeys(queue.decode() for queue in foreign)), next_due

    def _call(
        self, keyed: Queues, named: Queues, count: int, lease: float
    ) -> tuple[list[Any], list[Any], bytes, list[int], int]:
        keys = self._keys.get(keyed)
        if keys is None:  # 11 key names per queue: made once per set of queues
            if len(self._keys) > _LIMIT:
                self._keys.clear()
            keys = self.keys.core() + self.keys.reserve_keys(keyed) + [self.keys.revoked]
            self._keys[keyed] = keys
        args: list[Any] = [lease, count, PROMOTE_BATCH, self._records_db, *keyed, *named]
        taken, foreign, next_due, ready, missing = self._scripts.call(
            self._client, self._scripts.reserve, keys, args, (keyed, named, count, lease)
        )
        return taken, foreign, next_due, ready, missing

    @staticmethod
    def _choose(
        consumed: Queues, seen: Queues, ready: list[int], count: int
    ) -> Optional[tuple[Queues, Queues]]:
        """The next call's plan, from the ready counts of ``seen`` (a prefix of
        ``consumed``): the queues holding ready messages, in order, until their counts
        cover ``count``, and one more if known; None (every queue) when they do not cover
        it, or take in every queue."""
        chosen: list[str] = []
        covered, last = 0, 0
        for position, (queue, waiting) in enumerate(zip(seen, ready)):
            if waiting > 0:
                chosen.append(queue)
                last = position
                if covered >= count:
                    break
                covered += waiting
        if covered < count or len(chosen) == len(consumed):
            return None
        named = seen[: last + 1]
        return tuple(chosen), (() if named == tuple(chosen) else named)
