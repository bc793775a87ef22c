"""The status blueprint: ``GET <prefix>/<token>``, ``/events`` (SSE) and ``POST /revoke``.

Waiting (long polls and event streams) happens in the response body generator, after
Flask has torn the request and app contexts down: an open client holds one server thread
blocked in ``Store.watch_result`` and nothing else (no app context, no database session
of the app). Every wait is bounded and woken by the store's change notification.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any, NoReturn, Optional

from flask import Blueprint, Response, request
from werkzeug.exceptions import abort

from ..exceptions import OperationalError
from ..records import Record
from ..runtime import Runtime, current_runtime
from .status import build_payload, dumps
from .tokens import TokenError, read_token

#: Longest ``?wait=`` honoured, in seconds (longer values are capped, not refused).
MAX_WAIT = 30.0
#: An event stream ends after this many seconds; the browser reconnects by itself.
MAX_STREAM = 120.0
#: Seconds between keep-alive comments on a quiet stream (also how soon a closed
#: connection is noticed and its thread freed).
HEARTBEAT = 15.0
#: Reconnection delay suggested to ``EventSource``, in milliseconds.
RETRY_MS = 2000

NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

blueprint = Blueprint("flask_tasks", __name__, static_folder="static")
logger = logging.getLogger("flask_tasks.web")


# -- helpers ---------------------------------------------------------------------------


def json_response(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status=status, mimetype="application/json", headers=NO_STORE)


def refuse(status: int, code: str, message: str) -> NoReturn:
    """Stop the request with a JSON error ``{"error": code, "message": message}``."""
    abort(json_response({"error": code, "message": message}, status))


def _task_id(runtime: Runtime, token: str) -> str:
    try:
        return read_token(runtime.app, runtime.config, token)
    except TokenError as error:
        refuse(error.status, error.code, error.message)


def _read(runtime: Runtime, task_id: str) -> bytes:
    raw = runtime.store.get_result(task_id)
    if raw is None or Record.decode(runtime.codec, raw) is None:
        refuse(404, "not_found", "No such task: it was never sent, or its result expired.")
    return raw


def _payload(runtime: Runtime, task_id: str, raw: bytes) -> dict[str, Any]:
    record = Record.decode(runtime.codec, raw) or Record("PENDING")
    return build_payload(task_id, record, runtime.config.expose_traceback)


def _wait_seconds() -> float:
    value = request.args.get("wait")
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # also refuses NaN
        refuse(400, "bad_request", "wait must be a number of seconds, 0 or more.")
    return min(seconds, MAX_WAIT)


@blueprint.errorhandler(OperationalError)
def _store_unreachable(error: OperationalError) -> Response:
    """The result store is down: 503 with a retry hint (clients back off), not a 500."""
    logger.warning("Status endpoint cannot read results: %s", error)
    response = json_response(
        {"error": "unavailable", "message": "Task status is unavailable; try again shortly."},
        status=503,
    )
    response.headers["Retry-After"] = "2"
    return response


@blueprint.after_request
def _no_store(response: Response) -> Response:
    if request.endpoint != "flask_tasks.static":
        response.headers.update(NO_STORE)
    return response


# -- GET <prefix>/<token> --------------------------------------------------------------


@blueprint.get("/<token>")
def status(token: str) -> Response:
    """The task's status; ``?wait=N`` holds the answer until the record differs from
    the version in ``?since=`` (or from the current one), at most ``N`` seconds."""
    runtime = current_runtime()
    task_id = _task_id(runtime, token)
    wait = _wait_seconds()
    raw = _read(runtime, task_id)
    payload = _payload(runtime, task_id, raw)
    since = request.args.get("since")
    if wait > 0 and not payload["ready"] and since in (None, payload["version"]):
        body = _long_poll(runtime, task_id, raw, wait)
        return Response(body, mimetype="application/json", headers=NO_STORE)
    return json_response(payload)


def _long_poll(runtime: Runtime, task_id: str, raw: bytes, wait: float) -> Iterator[str]:
    try:
        changed = runtime.store.watch_result(task_id, raw, wait)
    except OperationalError as error:  # the status is sent already: answer what we know
        logger.warning("Long poll of task %s cut short: %s", task_id, error)
        changed = raw
    # A record that vanished while we waited (forgotten, expired) is reported as last
    # seen; the next request answers 404.
    yield dumps(_payload(runtime, task_id, changed if changed is not None else raw))


# -- GET <prefix>/<token>/events -------------------------------------------------------


@blueprint.get("/<token>/events")
def events(token: str) -> Response:
    """``text/event-stream``: one ``message`` event per change (``id:`` = version) until
    the task is ready, or until ``MAX_STREAM`` seconds, after which ``EventSource``
    reconnects with ``Last-Event-ID`` and misses nothing."""
    runtime = current_runtime()
    task_id = _task_id(runtime, token)
    raw = _read(runtime, task_id)
    since = request.headers.get("Last-Event-ID") or request.args.get("since")
    headers = {**NO_STORE, "X-Accel-Buffering": "no"}  # nginx: do not buffer the stream
    return Response(
        _event_stream(runtime, task_id, raw, since),
        mimetype="text/event-stream",
        headers=headers,
    )


def _event_stream(
    runtime: Runtime, task_id: str, raw: Optional[bytes], since: Optional[str]
) -> Iterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    deadline = time.monotonic() + MAX_STREAM
    while raw is not None:  # a record that vanished ends the stream; reconnecting gets 404
        payload = _payload(runtime, task_id, raw)
        if payload["version"] != since:
            since = payload["version"]
            yield f"id: {since}\ndata: {dumps(payload)}\n\n"
        remaining = deadline - time.monotonic()
        if payload["ready"] or remaining <= 0:
            return
        try:
            changed = runtime.store.watch_result(task_id, raw, min(remaining, HEARTBEAT))
        except OperationalError as error:  # end the stream; the browser reconnects
            logger.warning("Event stream of task %s ended: %s", task_id, error)
            return
        if changed == raw:
            yield ": keep-alive\n\n"  # a closed connection fails here and frees the thread
        raw = changed


# -- POST <prefix>/<token>/revoke ------------------------------------------------------


def check_same_origin(action: str = "revoke tasks") -> None:
    """Refuse what a cross-site form or image could send: only scripts of the page's own
    origin can add a custom header or a JSON body (anything else needs CORS)."""
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        refuse(403, "csrf", f"Cross-site requests cannot {action}.")
    if request.headers.get("X-Requested-With"):
        return
    if request.is_json and request.get_json(silent=True) is not None:
        return
    refuse(
        403,
        "csrf",
        "Send a JSON body (Content-Type: application/json) or an X-Requested-With header.",
    )


@blueprint.post("/<token>/revoke")
def revoke(token: str) -> Response:
    """Revoke the task (``{"terminate": true}`` also stops it if running). 202 with the
    status after revoking; 200 if it had already finished. A task that may be running
    keeps its state, and the answer says so in ``revoke`` (``"running"`` when it runs on,
    ``"terminating"`` when it is being stopped). Off unless ``TASKS_ALLOW_REVOKE``."""
    runtime = current_runtime()
    if not runtime.config.allow_revoke:
        refuse(403, "revoke_disabled", "Revoking tasks from the browser is turned off.")
    check_same_origin()
    task_id = _task_id(runtime, token)
    payload = _payload(runtime, task_id, _read(runtime, task_id))
    if payload["ready"]:
        return json_response(payload)  # nothing left to revoke
    body = request.get_json(silent=True) if request.is_json else None
    terminate = isinstance(body, dict) and body.get("terminate") is True
    running = runtime.revoke([task_id], terminate=terminate)
    after = _payload(runtime, task_id, _read(runtime, task_id))
    if task_id in running and not after["ready"]:
        if terminate:
            after["revoke"] = "terminating"
            after["message"] = "The task may be running: the worker is stopping it."
        else:
            after["revoke"] = "running"
            after["message"] = (
                "The task has started and will not be stopped; it ends with its own "
                'outcome. Revoke with {"terminate": true} to stop it.'
            )
    else:
        after["revoke"] = "revoked"
    return json_response(after, 202)


# -- other methods: JSON 405 rather than Flask's HTML page -----------------------------


def _method_not_allowed(**_kwargs: Any) -> Response:
    allowed = "POST" if request.path.endswith("/revoke") else "GET, HEAD"
    response = json_response(
        {"error": "method_not_allowed", "message": f"Use {allowed}."}, status=405
    )
    response.headers["Allow"] = allowed
    return response


_OTHER = ["PUT", "PATCH", "DELETE"]
blueprint.add_url_rule("/<token>", view_func=_method_not_allowed, methods=[*_OTHER, "POST"])
blueprint.add_url_rule(
    "/<token>/events", "events_405", _method_not_allowed, methods=[*_OTHER, "POST"]
)
blueprint.add_url_rule(
    "/<token>/revoke", "revoke_405", _method_not_allowed, methods=[*_OTHER, "GET"]
)
