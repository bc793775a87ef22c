"""Brokers: one interface (:class:`Broker`), several stores behind it, chosen by URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..exceptions import ImproperlyConfigured
from .base import Broker, DeadLetter, Delivery, Envelope

_SCHEMES = {
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+sentinel": "redis",
    "sqlite": "sqlite",
    "memory": "memory",
}


def hide_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def create_broker(url: str, *, key_prefix: str = "flask_tasks", **options: Any) -> Broker:
    """Open the broker that ``url`` names (``redis://``, ``sqlite:///``, ``memory://``...)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    kind = _SCHEMES.get(scheme)
    if kind == "redis":
        from .redis import RedisBroker

        return RedisBroker(url, key_prefix=key_prefix, **options)
    if kind == "sqlite":
        from .sqlite import SQLiteBroker

        return SQLiteBroker(url, key_prefix=key_prefix, **options)
    if kind == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(url, **options)
    known = ", ".join(f"{name}://" for name in _SCHEMES)
    raise ImproperlyConfigured(
        f"TASKS_BROKER_URL {hide_password(url)!r} has an unknown scheme {scheme!r}; "
        f"use one of {known}"
    )


__all__ = ["Broker", "DeadLetter", "Delivery", "Envelope", "create_broker", "hide_password"]
