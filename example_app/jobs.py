"""The example's tasks. They run in the worker, inside the app context."""

from __future__ import annotations

import time
from typing import Any

from flask import current_app

from .extensions import tasks


@tasks.task(bind=True)
def crunch_numbers(self: Any, steps: int = 20) -> dict[str, int]:
    """Add up the squares of 1..steps, slowly, reporting progress after each step.

    ``update_state`` stores a custom state with its meta; the status endpoint turns
    ``current``/``total`` into ``progress.percent`` for the page's progress bar.
    """
    delay = float(current_app.config["EXAMPLE_STEP_SECONDS"])
    total = 0
    for step in range(1, steps + 1):
        time.sleep(delay)
        total += step * step
        self.update_state(
            state="PROGRESS",
            meta={"current": step, "total": steps, "message": f"Step {step} of {steps}"},
        )
    return {"steps": steps, "sum_of_squares": total}


# throws=: an expected failure, logged by the worker without an error-level traceback.
@tasks.task(bind=True, throws=(ValueError,))
def import_contacts(self: Any, rows: int = 5, bad_row: int = 3) -> int:
    """Import contacts row by row, and fail on purpose at ``bad_row``."""
    delay = float(current_app.config["EXAMPLE_STEP_SECONDS"])
    for row in range(1, rows + 1):
        time.sleep(delay)
        if row == bad_row:
            raise ValueError(f"Row {row} has no e-mail address, so nothing was imported.")
        self.update_state(
            state="PROGRESS",
            meta={"current": row, "total": rows, "message": f"Imported row {row} of {rows}"},
        )
    return rows


@tasks.task
def send_reminder(name: str) -> str:
    """A job sent with ``countdown=``: it waits in the queue, then runs once due."""
    return f"Reminder sent to {name}."
