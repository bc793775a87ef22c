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
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg": "postgresql",
    "postgresql+psycopg2": "postgresql",
}


def check_url(url: str, setting: str) -> str:
    """The implementation kind (``"redis"``, ``"sqlite"``, ``"memory"``, ``"postgresql"``)
    of ``url``; ``ImproperlyConfigured`` naming ``setting`` and the known schemes if there
    is none, or naming the extra to install if its driver is missing."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    kind = _SCHEMES.get(scheme)
    if kind is None:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ImproperlyConfigured(
            f"{setting} {hide_password(url)!r} has an unknown scheme {scheme!r}; use one of {known}"
        )
    if kind == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError as error:
            raise ImproperlyConfigured(
                f"{setting} {hide_password(url)!r} needs psycopg 3, which is not installed "
                f"({error}): pip install Flask-Tasks[postgresql]"
            ) from None
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
    if kind == "postgresql":
        from .postgres import PostgresBroker

        return PostgresBroker(url, key_prefix=key_prefix, **options)
    from .memory import MemoryBroker

    return MemoryBroker(url, **options)
