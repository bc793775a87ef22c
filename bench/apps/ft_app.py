"""Flask-Tasks: ``flask --app bench.apps.ft_app worker``.

Broker from ``BENCH_FT_BROKER``; key prefix from ``BENCH_FT_PREFIX`` (default ``bench``), so
that several stores can share one Redis server (figure 6).
"""

from __future__ import annotations

import os

from flask import Flask

from flask_tasks import Tasks

tasks = Tasks()


@tasks.task(name="bench.noop")
def noop() -> None:
    """Does nothing; its (empty) result is stored like any other."""


def create_app(broker_url: str | None = None, key_prefix: str | None = None) -> Flask:
    app = Flask("bench")
    app.config["TASKS_BROKER_URL"] = broker_url or os.environ["BENCH_FT_BROKER"]
    app.config["TASKS_KEY_PREFIX"] = key_prefix or os.environ.get("BENCH_FT_PREFIX", "bench")
    tasks.init_app(app)
    return app


app = create_app() if "BENCH_FT_BROKER" in os.environ else None
