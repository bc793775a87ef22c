"""Browser side: status endpoints, signed tokens, the JS client (see docs/browser.rst)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from ..config import TasksConfig


def register_web(app: Flask, extension: Any, config: TasksConfig) -> None:
    """Register the status blueprint on ``app`` (not built yet in this revision)."""
