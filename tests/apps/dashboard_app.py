"""An app with the dashboard on, for the browser tests: ``flask --app apps.dashboard_app``.

Settings come from ``FLASK_*`` environment variables (broker URL, secret key); the
dashboard admits requests carrying the cookie ``dashboard-admin=let-me-in``.
"""

from __future__ import annotations

import time

from flask import Flask, request

from flask_tasks import Tasks

tasks = Tasks()


@tasks.task(name="dash.add")
def add(a: int, b: int) -> int:
    return a + b


@tasks.task(name="dash.slow")
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@tasks.task(name="dash.broken")
def broken(row: int) -> None:
    raise ValueError(f"row {row} has no e-mail address")


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        TASKS_DASHBOARD=True,
        TASKS_METRICS=True,
        TASKS_DASHBOARD_AUTHORIZE=lambda: request.cookies.get("dashboard-admin") == "let-me-in",
        TASKS_BEAT_SCHEDULE={
            "nightly-report": {"task": "dash.add", "schedule": 3600, "args": (1, 1)},
        },
    )
    app.config.from_prefixed_env()
    tasks.init_app(app)
    return app
