"""The example's pages: start a job, watch it, list the jobs of this browser."""

from __future__ import annotations

import secrets
import time
from typing import Any, Optional

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from .extensions import tasks
from .jobs import crunch_numbers, import_contacts, send_reminder

bp = Blueprint("example", __name__)

#: How many jobs the list remembers (they live in the session cookie).
MAX_JOBS = 8


@bp.before_app_request
def identify_visitor() -> None:
    """Give each browser a random id: TASKS_TOKEN_SCOPE binds status links to it."""
    if "visitor" not in session:
        session["visitor"] = secrets.token_urlsafe(16)


def remembered_jobs() -> list[dict[str, Any]]:
    return list(session.get("jobs", []))


def remember(task_id: str, kind: str, title: str, eta: Optional[float] = None) -> None:
    job = {"id": task_id, "kind": kind, "title": title, "started": time.time(), "eta": eta}
    session["jobs"] = [job, *remembered_jobs()][:MAX_JOBS]


def number_field(name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.form.get(name, default))
    except ValueError:
        abort(400, f"{name} must be a whole number")
    return min(max(value, low), high)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico whatever the page says: answer with the SVG icon."""
    return send_from_directory(current_app.static_folder or "static", "favicon.svg")


@bp.get("/")
def index() -> str:
    rows = [(job, tasks.AsyncResult(job["id"])) for job in remembered_jobs()]
    return render_template("index.html", rows=rows)


@bp.post("/jobs")
def start() -> Response:
    """Start the job chosen in the form, then show its page (Post/Redirect/Get)."""
    kind = request.form.get("kind")
    eta = None
    if kind == "crunch":
        steps = number_field("steps", 20, 1, 100)
        result = crunch_numbers.delay(steps)
        title = f"Crunch numbers ({steps} steps)"
    elif kind == "import":
        result = import_contacts.delay()
        title = "Import contacts"
    elif kind == "reminder":
        seconds = number_field("seconds", 10, 1, 120)
        name = (request.form.get("name") or "").strip()[:40] or "you"
        result = send_reminder.apply_async((name,), countdown=seconds)
        title = f"Reminder for {name}"
        eta = time.time() + seconds
    else:
        abort(400, "unknown kind of job")
    remember(result.id, kind, title, eta)
    return redirect(url_for(".job", job_id=result.id), code=303)


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    """One job's page. Only jobs this browser started are shown."""
    found = next((job for job in remembered_jobs() if job["id"] == job_id), None)
    if found is None:
        abort(404)
    starts_in = max(0.0, found["eta"] - time.time()) if found.get("eta") else 0.0
    result = tasks.AsyncResult(job_id)
    return render_template("job.html", job=found, result=result, starts_in=starts_in)
