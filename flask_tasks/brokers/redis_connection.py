"""Opening Redis connections for the Redis broker: URL forms, client options, server check.

URL forms::

    redis://[[user]:password@]host[:port][/db]
    rediss://[[user]:password@]host[:port][/db][?ssl_cert_reqs=...]   (TLS)
    unix://[[user]:password@]/path/to/redis.sock[?db=N]
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, cast
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..exceptions import ImproperlyConfigured

#: The oldest Redis this broker works with (SPEC section 10).
MINIMUM_VERSION = (5, 0)

#: Defaults for redis-py clients; any can be overridden by the broker's options.
#: Publishers should fail promptly (the core retries on OperationalError within
#: ``TASKS_PUBLISH_TIMEOUT``), so connecting gives up after a few seconds, a reply is
#: awaited for at most 5 s (every script is bounded; a frozen server is not waited out),
#: and redis-py retries once, at once, only a connection error (a pooled connection the
#: server closed), never a timeout (which would double the wait).
CLIENT_DEFAULTS: dict[str, Any] = {
    "socket_connect_timeout": 3.0,
    "socket_timeout": 5.0,
    "health_check_interval": 0,
}

try:  # redis-py releases that describe the client with a DriverInfo
    from redis.driver_info import DriverInfo as _DriverInfo
except ImportError:  # pragma: no cover - older redis-py take the version once, at import
    _DriverInfo = None  # type: ignore[assignment,misc]
#: Options with which the user names the client library themselves.
_DRIVER_OPTIONS = {"driver_info", "lib_name", "lib_version"}

_SENTINEL_HOST = re.compile(r"^\[?(?P<host>[^\]]*?)\]?(?::(?P<port>\d+))?$")


@dataclass
class RedisConnection:
    """A redis-py client and whatever else must be closed with it."""

    client: redis.Redis
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        self.client.close()
        for close in self.closers:
            close()

    def disconnect(self) -> None:
        """Close the idle pooled sockets (one in use, by a beat thread, say, is left to
        its command); the client connects again on its next command, and a forked
        child's pool, seeing another pid, starts empty (redis-py)."""
        self.client.connection_pool.disconnect(inuse_connections=False)
        for close in self.closers:
            close()


def client_options(options: dict[str, Any]) -> dict[str, Any]:
    """redis-py keyword arguments: our defaults, then ``options``."""
    merged: dict[str, Any] = dict(CLIENT_DEFAULTS)
    merged["retry"] = Retry(NoBackoff(), 0)  # the producer and the worker loop retry
    if int(redis.__version__.split(".", 1)[0]) >= 5:
        # redis-py 8 speaks RESP3 (HELLO) by default; Redis 5 only knows RESP2.
        merged["protocol"] = 2
    if _DriverInfo is not None and not _DRIVER_OPTIONS & set(options):
        # Otherwise redis-py reads its version from the installed package's metadata for
        # every connection object it makes: milliseconds, and in a forked worker child
        # megabytes of memory copied from its parent.
        merged["driver_info"] = _DriverInfo(lib_version=redis.__version__)
    merged.update(options)
    merged["decode_responses"] = False  # bodies and records are bytes
    return merged


def open_connection(url: str, options: dict[str, Any]) -> RedisConnection:
    """A client for ``url`` (any form above); connects lazily, on first use."""
    kwargs = client_options(options)
    if url.lower().startswith("redis+sentinel://"):
        return _open_sentinel(url, kwargs)
    # Many threads (web requests, SSE streams) may each run a command at once: they queue
    # for a pooled connection instead of failing with "Too many connections".
    kwargs.setdefault("max_connections", 50)
    try:
        client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **kwargs))
    except ValueError as exc:
        raise ImproperlyConfigured(f"Cannot parse the Redis URL: {exc}") from None
    pool = client.connection_pool
    try:  # redis-py connects lazily: check the options now, not at the first publish
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        client.close()
        raise ImproperlyConfigured(
            f"TASKS_BROKER_OPTIONS has an option redis-py refuses: {exc}"
        ) from None
    return RedisConnection(client)


def _open_sentinel(url: str, kwargs: dict[str, Any]) -> RedisConnection:
    from redis.sentinel import Sentinel

    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0]
    credentials, _, hosts = netloc.rpartition("@")
    if credentials:
        username, _, password = credentials.partition(":")
        kwargs.setdefault("username", unquote(username) or None)
        kwargs.setdefault("password", unquote(password) or None)
    parts = [part for part in path.split("/") if part]
    if not hosts or not parts:
        raise ImproperlyConfigured(
            "A Sentinel URL names its sentinels and the monitored service: "
            "redis+sentinel://[:password@]host:26379[,host:26379]/service_name[/db]"
        )
    sentinels = [_sentinel_address(host) for host in hosts.split(",")]
    if len(parts) > 1:
        kwargs.setdefault("db", int(parts[1]))
    sentinel_kwargs = kwargs.pop("sentinel_kwargs", None) or {
        "socket_connect_timeout": kwargs["socket_connect_timeout"],
        "socket_timeout": kwargs["socket_timeout"],
        "protocol": kwargs.get("protocol"),
    }
    sentinel_kwargs = {k: v for k, v in sentinel_kwargs.items() if v is not None}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels, sentinel_kwargs=sentinel_kwargs, **kwargs
    )
    client: redis.Redis = sentinel.master_for(unquote(parts[0]))  # type: ignore[no-untyped-call]
    return RedisConnection(client, [each.close for each in sentinel.sentinels])


def _sentinel_address(text: str) -> tuple[str, int]:
    match = _SENTINEL_HOST.match(text.strip())
    if not match or not match.group("host"):
        raise ImproperlyConfigured(f"Bad sentinel address {text!r} (use host:port)")
    return match.group("host"), int(match.group("port") or 26379)


def records_database(broker_url: str, backend_url: str) -> int | None:
    """The database number of ``backend_url`` when it names the same Redis server as
    ``broker_url`` (host, port or socket, credentials, TLS) and only the database
    differs; else None. Sentinel and unparsable URLs give None (checked no further).

    Then the broker's scripts can write records there themselves (``SELECT`` inside the
    script), so a message and its record still change in one atomic round trip.
    """
    plain = ("redis://", "rediss://", "unix://")
    if not all(url.lower().startswith(plain) for url in (broker_url, backend_url)):
        return None
    parse = cast("Callable[[str], dict[str, Any]]", redis.connection.parse_url)
    try:
        broker, backend = parse(broker_url), parse(backend_url)
    except ValueError:
        return None
    broker_db, backend_db = int(broker.pop("db", 0) or 0), int(backend.pop("db", 0) or 0)
    if broker != backend or broker_db == backend_db:
        return None
    return backend_db


def parse_version(text: str) -> tuple[int, ...]:
    """``"7.0.15"`` -> ``(7, 0, 15)``; non-numeric parts end the tuple."""
    numbers: list[int] = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def check_version(info: dict[str, Any], url: str) -> None:
    """Raise ImproperlyConfigured unless ``info`` (INFO server) shows Redis 5.0 or newer."""
    version = str(info.get("redis_version", "unknown"))
    if parse_version(version) < MINIMUM_VERSION:
        raise ImproperlyConfigured(
            f"Redis {version} found at {url}; Flask-Tasks needs Redis 5.0 or newer"
        )
