"""Browser side: status endpoints, signed tokens, the JS client (see docs/browser.rst)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from ..config import TasksConfig


def register_web(app: Flask, extension: Any, config: TasksConfig) -> None:
    """Register the status blueprint on ``app`` (not built yet in this revision)."""


def status_url(state: Any, task_id: str, external: bool = False) -> str:
    """The signed status URL of ``task_id`` for ``state``'s app (not built yet)."""
    raise NotImplementedError("the status endpoints are not built yet")
