"""Which implementation a URL names, and opening it."""

from __future__ import annotations

from typing import Any

from ..exceptions import ImproperlyConfigured
from .base import Broker, Transport, hide_password

_SCHEMES = {
    "amqp": "amqp",
    "amqps": "amqp",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+sentinel": "redis",
    "redis+cluster": "redis-cluster",
    "sqlite": "sqlite",
    "memory": "memory",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg": "postgresql",
    "postgresql+psycopg2": "postgresql",
}


def check_url(url: str, setting: str) -> str:
    """The implementation kind (``"amqp"``, ``"redis"``, ``"redis-cluster"``, ``"sqlite"``,
    ``"memory"``, ``"postgresql"``) of ``url``; ``ImproperlyConfigured`` naming ``setting``
    and the known schemes if there is none, naming what is wrong with a Redis Cluster
    URL, or naming the extra to install if its driver is missing."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    kind = _SCHEMES.get(scheme)
    if kind is None:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ImproperlyConfigured(
            f"{setting} {hide_password(url)!r} has an unknown scheme {scheme!r}; use one of {known}"
        )
    if kind == "redis-cluster":
        from .redis_cluster_connection import parse_cluster_url

        try:
            parse_cluster_url(url)
        except ImproperlyConfigured as error:
            raise ImproperlyConfigured(f"{setting}: {error}") from None
    if kind == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError as error:
            raise ImproperlyConfigured(
                f"{setting} {hide_password(url)!r} needs psycopg 3, which is not installed "
                f"({error}): pip install Flask-Tasks[postgresql]"
            ) from None
    return kind


#: Kinds that carry messages only: they need a store (``TASKS_RESULT_BACKEND``) for records.
TRANSPORT_ONLY = frozenset({"amqp"})

_BACKEND_EXAMPLE = 'TASKS_RESULT_BACKEND = "redis://localhost:6379/0"  # or "sqlite:///tasks.db"'


def check_urls(broker_url: str, result_backend: str | None) -> None:
    """Check an app's broker and result backend URLs together (``init_app``): each
    scheme is known, a transport-only broker (``amqp://``) has a result backend, and the
    result backend is a store. ``ImproperlyConfigured`` says which setting to change."""
    kind = check_url(broker_url, "TASKS_BROKER_URL")
    if result_backend:
        if check_url(result_backend, "TASKS_RESULT_BACKEND") in TRANSPORT_ONLY:
            raise ImproperlyConfigured(
                f"TASKS_RESULT_BACKEND {hide_password(result_backend)!r} is RabbitMQ, which "
                "carries messages but keeps no results; use a store, for example "
                f"{_BACKEND_EXAMPLE}"
            )
    elif kind in TRANSPORT_ONLY:
        raise ImproperlyConfigured(
            f"TASKS_BROKER_URL {hide_password(broker_url)!r} is RabbitMQ, which carries "
            "messages but keeps no results: set TASKS_RESULT_BACKEND to a store, for "
            f"example {_BACKEND_EXAMPLE}"
        )
    if kind == "amqp":
        from .amqp_link import import_pika

        import_pika()


def open_transport(url: str, *, key_prefix: str = "flask_tasks", **options: Any) -> Transport:
    """Open the transport that ``url`` names: RabbitMQ (``amqp://``, a transport only)
    or any broker :func:`open_broker` opens."""
    if check_url(url, "URL") == "amqp":
        from .amqp import AMQPTransport

        return AMQPTransport(url, key_prefix=key_prefix, **options)
    return open_broker(url, key_prefix=key_prefix, **options)


def open_broker(url: str, *, key_prefix: str = "flask_tasks", **options: Any) -> Broker:
    """Open the transport-and-store that ``url`` names (``redis://``, ``sqlite:///``...)."""
    kind = check_url(url, "URL")
    if kind in TRANSPORT_ONLY:
        raise ImproperlyConfigured(
            f"{hide_password(url)} is a transport only (it keeps no results): open it "
            "with open_transport, and a store with open_broker"
        )
    if kind == "redis":
        from .redis import RedisBroker

        return RedisBroker(url, key_prefix=key_prefix, **options)
    if kind == "redis-cluster":
        from .redis_cluster import RedisClusterBroker

        return RedisClusterBroker(url, key_prefix=key_prefix, **options)
    if kind == "sqlite":
        from .sqlite import SQLiteBroker

        return SQLiteBroker(url, key_prefix=key_prefix, **options)
    if kind == "postgresql":
        from .postgres import PostgresBroker

        return PostgresBroker(url, key_prefix=key_prefix, **options)
    from .memory import MemoryBroker

    return MemoryBroker(url, **options)
