"""Extension objects, created once and bound to each app in ``create_app``."""

from __future__ import annotations

from flask_tasks import Tasks

tasks = Tasks()
