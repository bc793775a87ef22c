"""How ``flask worker`` logs: one stderr handler per process, Celery's line format."""

from __future__ import annotations

import logging

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def configure_logging(level: str) -> None:
    """Log to stderr the way ``flask worker`` prints, once per process."""
    root = logging.getLogger()
    if not any(getattr(handler, "_flask_tasks", False) for handler in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._flask_tasks = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    logging.getLogger("flask_tasks").setLevel(level.upper())
