"""Startup hints about configuration that works but probably not as meant.

``init_app`` reports them: keys named as in Celery (``CELERY_BROKER_URL``) or with the
wrong prefix (``TASK_BROKER_URL``), which Flask-Tasks would otherwise silently ignore, and
messages that travel unsigned because the app has no ``SECRET_KEY``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Optional

from .config import PREFIX, TasksConfig

#: Celery setting names (after its prefix) whose Flask-Tasks name differs.
_RENAMED = {
    "TASK_SERIALIZER": "SERIALIZER",
    "RESULT_SERIALIZER": "SERIALIZER",
    "TASK_ROUTES": "ROUTES",
    "TASK_ANNOTATIONS": "ANNOTATIONS",
    "TASK_ALWAYS_EAGER": "ALWAYS_EAGER",
    "TASK_EAGER_PROPAGATES": "EAGER_PROPAGATES",
    "TASK_DEFAULT_QUEUE": "DEFAULT_QUEUE",
    "TASK_ACKS_LATE": "ACKS_LATE",
    "TASK_COMPRESSION": "COMPRESSION",
    "BROKER_TRANSPORT_OPTIONS": "BROKER_OPTIONS",
    "ALWAYS_EAGER": "ALWAYS_EAGER",
    "EAGER_PROPAGATES_EXCEPTIONS": "EAGER_PROPAGATES",
    "DEFAULT_QUEUE": "DEFAULT_QUEUE",
    "SCHEDULE": "BEAT_SCHEDULE",
    "ENABLE_UTC": "TIMEZONE",
}
_FOREIGN_PREFIXES = ("CELERYBEAT_", "CELERY_", "TASK_")


def misnamed_key_hints(config: Mapping[str, Any]) -> list[str]:
    """One message per ``CELERY_*``/``CELERYBEAT_*`` key, and per ``TASK_*`` key that
    looks like a ``TASKS_*`` setting, naming the key meant."""
    known = TasksConfig.keys()
    hints = []
    for key in sorted(config):
        prefix = next((p for p in _FOREIGN_PREFIXES if key.startswith(p)), None)
        if prefix is None or key.startswith(PREFIX):
            continue
        meant = _meant(key[len(prefix) :], known)
        if meant is None and prefix == "TASK_":
            continue  # TASK_* may well be the app's own setting
        where = f"use {meant}" if meant else "see the configuration page for the TASKS_* keys"
        hints.append(
            f"{key} is in the app config, but Flask-Tasks reads only TASKS_* keys and "
            f"ignores it: {where}"
        )
    return hints


def _meant(name: str, known: list[str]) -> Optional[str]:
    name = _RENAMED.get(name, name)
    if PREFIX + name in known:
        return PREFIX + name
    close = difflib.get_close_matches(PREFIX + name, known, n=1, cutoff=0.8)
    return close[0] if close else None


def unsigned_messages_hint(config: Mapping[str, Any], tasks_config: TasksConfig) -> Optional[str]:
    """A message when tasks travel unsigned only because ``SECRET_KEY`` is missing (not
    when ``TASKS_SIGN_MESSAGES`` says so, nor when messages never leave the process)."""
    if config.get("SECRET_KEY") or tasks_config.sign_messages is not None:
        return None
    if tasks_config.always_eager or (tasks_config.broker_url or "").startswith("memory://"):
        return None
    return (
        "The app has no SECRET_KEY, so task messages are not signed: anyone who can write "
        "to the broker can run any registered task. Set SECRET_KEY (the same in the web "
        "processes and the workers), or TASKS_SIGN_MESSAGES = False to send unsigned "
        "messages knowingly."
    )


__all__ = ["misnamed_key_hints", "unsigned_messages_hint"]
