"""Which implementation a URL names, and opening it."""

from __future__ import annotations

from typing import Any

from ..exceptions import ImproperlyConfigured
from .base import Broker, hide_password

_SCHEMES = {
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+sentinel": "redis",
    "sqlite": "sqlite",
    "memory": "memory",
}


def check_url(url: str, setting: str) -> str:
    """The implementation kind (``"redis"``, ``"sqlite"``, ``"memory"``) of ``url``;
    ``ImproperlyConfigured`` naming ``setting`` and the known schemes if there is none."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    kind = _SCHEMES.get(scheme)
    if kind is None:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ImproperlyConfigured(
            f"{setting} {hide_password(url)!r} has an unknown scheme {scheme!r}; use one of {known}"
        )
    return kind


def open_broker(url: str, *, key_prefix: str = "flask_tasks", **options: Any) -> Broker:
    """Open the transport-and-store that ``url`` names (``redis://``, ``sqlite:///``...)."""
    kind = check_url(url, "URL")
    if kind == "redis":
        from .redis import RedisBroker

        return RedisBroker(url, key_prefix=key_prefix, **options)
    if kind == "sqlite":
        from .sqlite import SQLiteBroker

        return SQLiteBroker(url, key_prefix=key_prefix, **options)
    from .memory import MemoryBroker

    return MemoryBroker(url, **options)
