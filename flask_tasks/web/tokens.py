"""Signed status tokens: which task a browser may watch, for how long, in which scope.

A token is an itsdangerous ``URLSafeTimedSerializer`` dump of ``[task_id]`` or
``[task_id, scope_tag]``, signed with the app's ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS``
still verify, so keys can be rotated) under a fixed salt. It is signed, not encrypted:
the task id is readable by whoever holds the token, the scope is not (only an HMAC of it
is stored).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union, cast

from flask import Flask
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from ..exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from ..config import TasksConfig

#: Fixed salt: status tokens cannot be replayed as session cookies or other signed data.
SALT = "flask-tasks.status-token"

Key = Union[str, bytes]


class TokenError(Exception):
    """A token the endpoints refuse; ``status`` and ``code`` become the JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def secret_keys(app: Flask) -> list[Key]:
    """The app's signing keys, oldest first (fallbacks, then ``SECRET_KEY``)."""
    secret = app.config.get("SECRET_KEY")
    if not secret:
        raise ImproperlyConfigured(
            "Flask-Tasks status URLs are signed with the app's SECRET_KEY, and it is not "
            "set: set app.config['SECRET_KEY'] (the same value in every web process)"
        )
    return [*(app.config.get("SECRET_KEY_FALLBACKS") or []), secret]


def _serializer(keys: Sequence[Key]) -> URLSafeTimedSerializer:
    # itsdangerous takes the keys oldest first and signs with the last one.
    return URLSafeTimedSerializer(cast("list[str]", list(keys)), salt=SALT)


def _scope_tag(key: Key, scope: Any) -> str:
    """An HMAC of the scope value: binds the token without revealing the value."""
    text = json.dumps(scope, sort_keys=True, default=str, separators=(",", ":"))
    key_bytes = key.encode() if isinstance(key, str) else key
    digest = hmac.new(key_bytes, b"flask-tasks.scope:" + text.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def make_token(app: Flask, config: TasksConfig, task_id: str) -> str:
    """A token for ``task_id``, bound to the current scope when ``TASKS_TOKEN_SCOPE`` is set."""
    keys = secret_keys(app)
    payload: list[str] = [task_id]
    if config.token_scope is not None:
        payload.append(_scope_tag(keys[-1], config.token_scope()))
    return _serializer(keys).dumps(payload)


def read_token(app: Flask, config: TasksConfig, token: str) -> str:
    """The task id in ``token``, or ``TokenError``: 400 bad, 410 expired, 403 other scope.

    With ``TASKS_ALLOW_RAW_IDS`` a string that is not a valid token is taken as a task id
    (and no scope applies to it).
    """
    try:
        keys = secret_keys(app)
        payload = _serializer(keys).loads(token, max_age=math.ceil(config.token_max_age))
    except SignatureExpired:
        raise TokenError(
            410, "expired", "This status link has expired; reload the page for a new one."
        ) from None
    except (BadData, ImproperlyConfigured):
        if config.allow_raw_ids:
            return token
        raise TokenError(400, "bad_token", "This status link is not valid.") from None
    if not _well_formed(payload):
        raise TokenError(400, "bad_token", "This status link is not valid.")
    task_id = payload[0]
    if config.token_scope is not None:
        scope = config.token_scope()
        tag = payload[1] if len(payload) > 1 else ""
        if not any(hmac.compare_digest(tag, _scope_tag(key, scope)) for key in keys):
            raise TokenError(403, "forbidden", "This status link belongs to someone else.")
    return str(task_id)


def _well_formed(payload: Any) -> bool:
    return (
        isinstance(payload, list)
        and 1 <= len(payload) <= 2
        and all(isinstance(item, str) and item for item in payload)
    )
