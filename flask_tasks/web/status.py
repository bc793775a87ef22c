"""The JSON the status endpoints send: built from a stored :class:`Record`, nothing else.

Only what a page needs leaves the server: the state, the progress meta of a custom state,
the return value of a success, and the type and message of an error. Tracebacks only with
``TASKS_EXPOSE_TRACEBACK``; worker details (host names, pids, task names) never.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, Optional

from .. import states
from ..records import Error, Record


def build_payload(task_id: str, record: Record, expose_traceback: bool = False) -> dict[str, Any]:
    """The status document of one task (see docs/browser.rst for the schema)."""
    state = record.state
    payload: dict[str, Any] = {
        "id": task_id,
        "state": state,
        "ready": state in states.READY_STATES,
        "successful": state == states.SUCCESS,
        "progress": None,
        "result": None,
        "error": None,
        "date_done": record.date_done,
        "version": record.version,
    }
    if state == states.SUCCESS:
        payload["result"] = record.result
    elif state in states.EXCEPTION_STATES:
        traceback = record.traceback if expose_traceback else None
        error = record.error or Error("Error", message=_text_of(record.result))
        payload["error"] = error_of(error, traceback)
    elif state not in states.ALL_STATES:  # a custom state from update_state()
        payload["progress"] = progress_of(record.result)
    return payload


def error_of(error: Error, traceback: Optional[str] = None) -> dict[str, Any]:
    """``{"type", "message"}`` (and ``traceback`` if given) of a stored exception."""
    described = {"type": error.type, "message": error.message}
    if traceback:
        described["traceback"] = str(traceback)
    return described


def progress_of(meta: Any) -> Any:
    """The meta of a custom state, with ``percent`` (0-100) added when it has numeric
    ``current`` and ``total``."""
    if not isinstance(meta, dict):
        return meta
    progress = dict(meta)
    current, total = _number(meta.get("current")), _number(meta.get("total"))
    if current is not None and total is not None and total > 0 and "percent" not in meta:
        progress["percent"] = round(min(max(current / total, 0.0), 1.0) * 100, 1)
    return progress


def _text_of(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)  # results stored with pickle may hold any object


def dumps(value: Any) -> str:
    """Compact JSON; values JSON cannot hold (pickle results) become strings."""
    return json.dumps(value, default=_json_default, separators=(",", ":"))
