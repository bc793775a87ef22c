"""The dashboard blueprint: queues, workers, schedule, failures, dead letters, a chart.

Off unless ``TASKS_DASHBOARD`` (the Prometheus endpoint: ``TASKS_METRICS``), mounted at
``TASKS_DASHBOARD_URL_PREFIX``. Every request asks ``TASKS_DASHBOARD_AUTHORIZE`` first;
without it everyone gets 403. Actions (retry or delete a dead letter) are POSTs that only
a script of the page's own origin can send (a JSON body, see :func:`check_same_origin`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, render_template, request

from ..exceptions import OperationalError
from ..runtime import current_runtime
from .chart import seconds_text, throughput_chart
from .overview import overview
from .views import check_same_origin, json_response, refuse

dashboard = Blueprint("flask_tasks_dashboard", __name__, template_folder="templates")
logger = logging.getLogger("flask_tasks.web")


@dashboard.before_request
def _authorize() -> None:
    config = current_runtime().config
    wanted = config.metrics if request.endpoint == f"{dashboard.name}.metrics" else config.dashboard
    if not wanted:
        refuse(404, "not_found", "This page is turned off.")
    if config.dashboard_authorize is None:
        refuse(
            403,
            "forbidden",
            "Set TASKS_DASHBOARD_AUTHORIZE to a function that returns True for who may "
            "see the dashboard; without it everyone is refused.",
        )
    if not config.dashboard_authorize():
        refuse(403, "forbidden", "You may not see the task dashboard.")


@dashboard.after_request
def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@dashboard.errorhandler(OperationalError)
def _unreachable(error: OperationalError) -> Response:
    logger.warning("Dashboard cannot reach the broker: %s", error)
    response = json_response(
        {"error": "unavailable", "message": f"The broker cannot be reached: {error}"}, 503
    )
    response.headers["Retry-After"] = "5"
    return response


@dashboard.get("/")
def index() -> str:
    """The dashboard page (its script refreshes it every few seconds)."""
    data = overview(current_runtime())
    return render_template(
        "flask_tasks/dashboard.html",
        chart=throughput_chart(data["minutes"]),
        totals=_hour_totals(data["minutes"]),
        when=_when,
        seconds_text=seconds_text,
        **data,
    )


def _hour_totals(minutes: list[dict[str, Any]]) -> dict[str, Any]:
    succeeded = sum(m["succeeded"] for m in minutes)
    failed = sum(m["failed"] for m in minutes)
    weighted = sum((m["mean_seconds"] or 0) * (m["succeeded"] + m["failed"]) for m in minutes)
    return {
        "succeeded": succeeded,
        "failed": failed,
        "mean_seconds": weighted / (succeeded + failed) if succeeded + failed else None,
    }


def _when(timestamp: Any) -> str:
    """A Unix time or ISO string as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if timestamp is None:
        return "—"
    if isinstance(timestamp, str):
        moment = datetime.fromisoformat(timestamp)
    else:
        moment = datetime.fromtimestamp(float(timestamp), timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _letter_id() -> str:
    check_same_origin("change dead letters")
    body = request.get_json(silent=True)
    message_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(message_id, str) or not message_id:
        refuse(400, "bad_request", 'Send {"id": "<message id>"} as the JSON body.')
    return message_id


@dashboard.post("/dead-letters/retry")
def retry_dead_letter() -> Response:
    """Put a dead letter back at the end of its queue: ``{"id": ...}``."""
    message_id = _letter_id()
    if not current_runtime().transport.retry_dead_letter(message_id):
        refuse(404, "not_found", f"No dead letter {message_id!r} (retried or deleted already?).")
    return json_response({"id": message_id, "retried": True})


@dashboard.post("/dead-letters/delete")
def delete_dead_letter() -> Response:
    """Drop a dead letter for good: ``{"id": ...}``."""
    message_id = _letter_id()
    if not current_runtime().transport.delete_dead_letter(message_id):
        refuse(404, "not_found", f"No dead letter {message_id!r} (retried or deleted already?).")
    return json_response({"id": message_id, "deleted": True})


@dashboard.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition (``TASKS_METRICS``)."""
    from .metrics import exposition  # prometheus-client is an optional extra

    body, content_type = exposition(current_runtime())
    return Response(body, content_type=content_type)


__all__ = ["dashboard"]
