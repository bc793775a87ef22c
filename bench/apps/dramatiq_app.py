"""Dramatiq: ``dramatiq bench.apps.dramatiq_app``, with the Results middleware on Redis."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

_url = os.environ["BENCH_REDIS_URL"]

broker = RedisBroker(url=_url)
broker.add_middleware(Results(backend=RedisBackend(url=_url)))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", queue_name="default", store_results=True, max_retries=0)
def noop() -> None:
    """Does nothing; the Results middleware stores its (empty) result."""
