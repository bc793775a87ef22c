"""The Flask-Tasks example app: pages that start background jobs and show their progress.

Run the web server and a worker on the embedded SQLite broker (no server needed)::

    scripts/example.sh                    # or, in two terminals:
    flask --app example_app worker
    flask --app example_app run

Settings come from ``FLASK_``-prefixed environment variables (Flask's
``from_prefixed_env``), e.g. ``FLASK_TASKS_BROKER_URL=redis://localhost:6379/0`` or
``FLASK_SECRET_KEY=...``; give the web server and the worker the same ones.
"""

from __future__ import annotations

import atexit
import os
import secrets
import tempfile
from collections.abc import Mapping
from typing import Any, Optional

from flask import Flask, session

from flask_tasks.brokers.sqlite_store import SQLiteStore
from flask_tasks.exceptions import OperationalError

from . import jobs  # noqa: F401  (declares the tasks, so the worker knows them too)
from .extensions import tasks


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    """Create the example app; ``config`` overrides everything else (for tests)."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        # The job page has a "Cancel" button: allow revoking from the browser.
        TASKS_ALLOW_REVOKE=True,
        # A status link works only for the browser that started the job.
        TASKS_TOKEN_SCOPE=lambda: session.get("visitor"),
        # Cross-site POSTs carry no session cookie, so another site cannot start jobs
        # in your name.
        SESSION_COOKIE_SAMESITE="Lax",
        # Seconds per step of the "crunch numbers" job.
        EXAMPLE_STEP_SECONDS=0.25,
    )
    app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_TASKS_BROKER_URL, ...
    if config:
        app.config.from_mapping(config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = instance_secret_key(app.instance_path)

    tasks.init_app(app)  # TASKS_BROKER_URL unset: SQLite in the instance folder
    atexit.register(close_broker, app)

    from .views import bp

    app.register_blueprint(bp)
    return app


def close_broker(app: Flask) -> None:
    """At exit: fold the SQLite broker's write-ahead log into its file (a worker may keep
    the database open, so SQLite would leave a multi-megabyte ``-wal`` file), then close."""
    runtime = tasks.runtime(app)
    store = runtime.store
    if isinstance(store, SQLiteStore):
        try:
            store.checkpoint()
        except OperationalError as error:
            app.logger.warning("Could not checkpoint the SQLite broker: %s", error)
    runtime.close()


def instance_secret_key(instance_path: str) -> str:
    """A random key kept in ``instance/secret_key``, created on first use.

    The web server and the worker must share the key (it signs task messages and status
    links); reading it from one file gives both the same key without configuration.
    """
    os.makedirs(instance_path, exist_ok=True)
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        handle, draft = tempfile.mkstemp(dir=instance_path, prefix=".secret_key.")
        with os.fdopen(handle, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            os.link(draft, path)  # atomic, and never replaces a key another process made
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    with open(path) as file:
        return file.read().strip()
