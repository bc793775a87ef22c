"""Huey: ``huey_consumer bench.apps.huey_app.huey``.

``store_none=True`` so that the no-op's result is stored like the other libraries'. Huey's
default mode (configuration ``huey``) has ``result.get(blocking=True)`` poll the result
with back-off; with ``BENCH_HUEY_NOTIFY=1`` (configuration ``huey-notify``)
``notify_result=True``, Huey's documented low-latency option: the worker pushes to a list
that ``get()`` waits on with BLPOP.
"""

from __future__ import annotations

import os

from huey import RedisHuey

huey = RedisHuey(
    "bench",
    url=os.environ["BENCH_REDIS_URL"],
    store_none=True,
    notify_result=os.environ.get("BENCH_HUEY_NOTIFY") == "1",
)


@huey.task(name="bench.noop")
def noop() -> None:
    """Does nothing; Huey stores its (empty) result."""
