"""Celery: ``celery -A bench.apps.celery_app worker``. Broker on Redis db 0, results on db 1
(so that the harness counts stored results with DBSIZE)."""

from __future__ import annotations

import os

from celery import Celery

_url = os.environ["BENCH_REDIS_URL"].rsplit("/", 1)[0]

app = Celery("bench", broker=f"{_url}/0", backend=f"{_url}/1")
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> None:
    """Does nothing; its result is stored in the Redis result backend."""
