"""Huey: ``huey_consumer bench.apps.huey_app.huey``.

``store_none=True`` so that the no-op's result is stored like the other libraries';
``notify_result=True`` is Huey's documented low-latency option for ``result.get()``
(a BLPOP instead of polling with back-off).
"""

from __future__ import annotations

import os

from huey import RedisHuey

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"], store_none=True, notify_result=True)


@huey.task(name="bench.noop")
def noop() -> None:
    """Does nothing; Huey stores its (empty) result."""
