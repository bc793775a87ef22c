"""Brokers: one interface (:class:`Broker`), several stores behind it, chosen by URL."""

from __future__ import annotations

import re
from typing import Any

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
    """``url`` with any password replaced by ``***``, safe for logs and error messages.

    Works on URLs urllib cannot split, such as Sentinel's ``host1:26379,host2:26379``.
    """
    return _PASSWORD.sub(r"\1***@", url)


_PASSWORD = re.compile(r"^([a-z0-9+.-]+://[^:/@]*:)[^/]*@", re.IGNORECASE)


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
