"""Browser side: status endpoints, signed tokens, the JS client (see docs/browser.rst).

``init_app`` calls :func:`register_web`, which mounts the ``flask_tasks`` blueprint at
``TASKS_URL_PREFIX`` (default ``/tasks``):

- ``GET <prefix>/<token>``: the task's status as JSON (``?wait=`` long-polls);
- ``GET <prefix>/<token>/events``: Server-Sent Events until the task is ready;
- ``POST <prefix>/<token>/revoke``: revoke, when ``TASKS_ALLOW_REVOKE``;
- ``GET <prefix>/static/flask-tasks.js``: the ES module with ``watchTask``;
- with ``TASKS_DASHBOARD``/``TASKS_METRICS``, the dashboard and ``/metrics`` at
  ``TASKS_DASHBOARD_URL_PREFIX`` (``web/dashboard.py``).

Templates get ``tasks_status_url(result)`` as a Jinja global.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from flask import url_for

from .dashboard import dashboard
from .tokens import make_token
from .views import blueprint

if TYPE_CHECKING:
    from flask import Flask

    from ..config import TasksConfig
    from ..result import AsyncResult
    from ..runtime import Runtime


def register_web(app: Flask, extension: Any, config: TasksConfig) -> None:
    """Mount the status blueprint (and the dashboard, when turned on) on ``app`` and add
    the ``tasks_status_url`` global."""
    if blueprint.name not in app.blueprints:
        app.register_blueprint(blueprint, url_prefix=config.url_prefix)
    if config.metrics:
        from .metrics import require_prometheus

        require_prometheus()
    if (config.dashboard or config.metrics) and dashboard.name not in app.blueprints:
        app.register_blueprint(dashboard, url_prefix=config.dashboard_url_prefix)

    def tasks_status_url(result: Union[AsyncResult, str], _external: bool = False) -> str:
        """The signed status URL of ``result`` (an AsyncResult or a task id)."""
        return str(extension.status_url(result, _external=_external))

    app.add_template_global(tasks_status_url, "tasks_status_url")


def status_url(runtime: Runtime, task_id: str, external: bool = False) -> str:
    """The status URL of ``task_id``, with a token signed by ``runtime``'s app.

    Raises ``ImproperlyConfigured`` when the app has no ``SECRET_KEY``. Needs an app
    context (a request, or ``SERVER_NAME`` for ``external`` URLs outside one).
    """
    token = make_token(runtime.app, runtime.config, task_id)
    return url_for("flask_tasks.status", token=token, _external=external)


__all__ = ["register_web", "status_url"]
