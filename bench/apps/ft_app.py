"""Flask-Tasks: ``flask --app bench.apps.ft_app worker``.

Broker from ``BENCH_FT_BROKER``; key prefix from ``BENCH_FT_PREFIX`` (default ``bench``), so
that several stores can share one Redis server (figure 6). ``BENCH_FT_BACKEND`` sets
``TASKS_RESULT_BACKEND`` and ``BENCH_FT_SECRET`` the ``SECRET_KEY`` (signed messages).
``BENCH_FT_QUEUES`` (a number above 1) names the queues ``q0``... that the many-queues
configuration's worker consumes and its producer spreads the tasks over.
"""

from __future__ import annotations

import os

from flask import Flask

from flask_tasks import Tasks

tasks = Tasks()


@tasks.task(name="bench.noop")
def noop() -> None:
    """Does nothing; its (empty) result is stored like any other."""


def create_app(
    broker_url: str | None = None,
    key_prefix: str | None = None,
    backend_url: str | None = None,
    secret: str | None = None,
) -> Flask:
    app = Flask("bench")
    app.config["TASKS_BROKER_URL"] = broker_url or os.environ["BENCH_FT_BROKER"]
    app.config["TASKS_KEY_PREFIX"] = key_prefix or os.environ.get("BENCH_FT_PREFIX", "bench")
    backend_url = backend_url or os.environ.get("BENCH_FT_BACKEND")
    if backend_url:
        app.config["TASKS_RESULT_BACKEND"] = backend_url
    secret = secret or os.environ.get("BENCH_FT_SECRET")
    if secret:
        app.config["SECRET_KEY"] = secret
    tasks.init_app(app)
    return app


def queues() -> list[str]:
    """The queues of ``BENCH_FT_QUEUES`` (none when unset or 1: the default queue)."""
    count = int(os.environ.get("BENCH_FT_QUEUES") or 1)
    return [f"q{number}" for number in range(count)] if count > 1 else []


app = create_app() if "BENCH_FT_BROKER" in os.environ else None
