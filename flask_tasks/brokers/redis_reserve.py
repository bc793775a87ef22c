"""Running ``reserve.lua`` for the Redis broker, at a cost that does not grow with the
number of queues consumed.

A call carries 11 keys per queue (its 10 ready lists and its wake list): a worker of 20
queues would send 230 keys on every call, and the server would build a Lua table of them,
while a call takes from one or two queues. So after a call that took all it asked for, the
next carries the keys of only the queues it should take from, by the ready counts the
script returned: the first ones holding ready messages until their counts cover the count
asked, and the next one holding some. It also names every queue consumed, in precedence
order: reaching a queue with ready messages but no keys, the script stops taking
("missing"), and the call is made again with every queue's keys. So is the call after one
that came back short, which also empties the wake lists of every queue.

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
        #: Queues consumed -> the queues the next call gives keys (absent: all of them).
        self._plans: dict[Queues, Queues] = {}

    def run(
        self, queues: Sequence[str], count: int, lease: float
    ) -> tuple[list[Any], list[str], bytes]:
        """Flat (id, meta, body, revoked flag, deliveries, token) groups taken, the queues
        outside ``queues`` holding due or expired messages, and (when it came back short)
        the seconds until the earliest due time."""
        consumed = tuple(queues)
        count = max(0, count)
        plan = self._plans.get(consumed) if count > 0 else None
        taken, foreign, next_due, ready, missing = self._call(
            plan or consumed, plan and consumed, count, lease
        )
        if missing:  # a queue without keys holds ready messages: again with every queue
            more, also, next_due, ready, _ = self._call(
                consumed, (), count - len(taken) // 6, lease
            )
            taken += more
            foreign += also
        if count > 0 and len(consumed) > 1:
            chosen = self._choose(consumed, ready, count) if len(taken) >= 6 * count else None
            if chosen is None:
                self._plans.pop(consumed, None)
            else:
                if len(self._plans) > _LIMIT:
                    self._plans.clear()
                self._plans[consumed] = chosen
        return taken, list(dict.fromkeys(queue.decode() for queue in foreign)), next_due

    def _call(
        self, keyed: Queues, order: Optional[Queues], count: int, lease: float
    ) -> tuple[list[Any], list[Any], bytes, list[int], int]:
        keys = self._keys.get(keyed)
        if keys is None:  # 11 key names per queue: made once per set of queues
            if len(self._keys) > _LIMIT:
                self._keys.clear()
            keys = self.keys.core() + self.keys.reserve_keys(keyed) + [self.keys.revoked]
            self._keys[keyed] = keys
        args: list[Any] = [lease, count, PROMOTE_BATCH, self._records_db, *keyed, *(order or ())]
        taken, foreign, next_due, ready, missing = self._scripts.call(
            self._client, self._scripts.reserve, keys, args, (keyed, order, count, lease)
        )
        return taken, foreign, next_due, ready, missing

    @staticmethod
    def _choose(consumed: Queues, ready: list[int], count: int) -> Optional[Queues]:
        """The queues the next call gives keys: those holding ready messages, in order,
        until their counts cover ``count``, and one more; None for all of them."""
        chosen: list[str] = []
        covered = 0
        for queue, waiting in zip(consumed, ready):
            if waiting > 0:
                chosen.append(queue)
                if covered >= count:
                    break
                covered += waiting
        if not chosen or len(chosen) == len(consumed):
            return None
        return tuple(chosen)
