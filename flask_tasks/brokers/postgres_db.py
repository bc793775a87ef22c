"""The PostgreSQL broker's connections: URL, options, a small pool, errors, ``fork()``.

Connections are psycopg 3 connections in autocommit mode: every statement is a
transaction of its own, and the few operations of more than one statement say so with
``connection.transaction()``. Threads borrow a connection from the pool for one operation
and give it back; up to ``pool_size`` idle ones are kept open.

A forked child never uses nor closes a connection it inherited (closing one would end the
parent's session on the shared socket): it opens its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from ..exceptions import ImproperlyConfigured, OperationalError
from .base import hide_password

#: URL schemes this broker accepts; SQLAlchemy's driver forms too, so that an app can
#: reuse its ``SQLALCHEMY_DATABASE_URI``.
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")

#: Connections inherited over fork(): kept referenced so that they are never closed.
_INHERITED: list[object] = []


def keep_inherited(connection: object) -> None:
    """Keep a connection inherited over ``fork()`` referenced, so that it is never closed
    (closing it would end the parent's session on the shared socket)."""
    _INHERITED.append(connection)


@dataclass(frozen=True)
class PostgresOptions:
    """Tuning knobs, from keyword arguments or the URL's query string."""

    #: Idle connections kept open for reuse by the threads of one process.
    pool_size: int = 4

    @classmethod
    def parse(cls, url: str, query: Mapping[str, str], options: Mapping[str, Any]) -> Any:
        given: dict[str, Any] = {**query, **options}
        unknown = sorted(set(given) - {"pool_size"})
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown PostgreSQL broker option(s) {', '.join(unknown)} for "
                f"{hide_password(url)!r}; the only option is pool_size (libpq's own "
                "parameters go in the URL's query string)"
            )
        try:
            pool_size = int(given.get("pool_size", cls.pool_size))
        except (TypeError, ValueError):
            pool_size = -1
        if pool_size < 0:
            raise ImproperlyConfigured(
                f"PostgreSQL broker option pool_size must be a whole number >= 0, "
                f"got {given.get('pool_size')!r}"
            )
        return cls(pool_size)


def parse_url(url: str, options: Mapping[str, Any]) -> tuple[str, PostgresOptions]:
    """The libpq connection URI for ``url`` and the broker's own options taken from it."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ImproperlyConfigured(
            f"PostgreSQL broker URL {hide_password(url)!r} must start with postgresql:// "
            "(or postgres://)"
        )
    libpq: list[tuple[str, str]] = []
    ours: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "pool_size":
            ours[key] = value
        else:
            libpq.append((key, value))
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(libpq), ""))
    parsed = PostgresOptions.parse(url, ours, options)
    try:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise ImproperlyConfigured(
            f"Cannot use the PostgreSQL URL {hide_password(url)!r}: {str(exc).strip()} "
            "(the query string takes libpq's connection parameters, and pool_size)"
        ) from None
    return conninfo, parsed


class _Disowning(Protocol):
    def disown(self) -> None: ...


_FORKABLE: weakref.WeakSet[_Disowning] = weakref.WeakSet()


def disown_after_fork(owner: _Disowning) -> None:
    """Call ``owner.disown()`` in every child forked from now on."""
    _FORKABLE.add(owner)


def _disown_after_fork() -> None:
    for owner in list(_FORKABLE):
        owner.disown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_after_fork)


class Pool:
    """Connections to one database for the threads of one process."""

    def __init__(
        self,
        conninfo: str,
        url: str,
        size: int,
        prepare: Callable[[psycopg.Connection[Any]], None],
    ) -> None:
        self.conninfo = conninfo
        #: The URL, password hidden, for messages.
        self.url = hide_password(url)
        self._size = size
        self._prepare = prepare
        self._prepared = False
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._pid = os.getpid()
        self._closed = False
        disown_after_fork(self)

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection of this pool's own (not pooled), in autocommit mode."""
        with self.errors():
            return psycopg.connect(self.conninfo, autocommit=True)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn psycopg's errors into OperationalError naming the database."""
        try:
            yield
        except psycopg.Error as exc:
            raise OperationalError(f"PostgreSQL broker {self.url}: {exc}") from exc

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Borrow a connection for one operation (each statement commits on its own)."""
        if self._pid != os.getpid():
            self.disown()
        if self._closed:
            raise OperationalError(f"The PostgreSQL broker {self.url} is closed")
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        with self.errors():
            if connection is None:
                connection = self.connect()
            try:
                if not self._prepared:
                    self._prepare(connection)
                    self._prepared = True
                yield connection
            except psycopg.OperationalError:
                self._drop_idle()  # the server went away: the idle ones are dead too
                connection.close()
                raise
            except BaseException:
                connection.close()
                raise
        self._give_back(connection)

    def _give_back(self, connection: psycopg.Connection[Any]) -> None:
        idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if idle and not self._closed and len(self._idle) < self._size:
                self._idle.append(connection)
                return
        connection.close()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def disown(self) -> None:
        """In a forked child: forget the parent's connections without closing them."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        for connection in self._idle:
            keep_inherited(connection)
        self._idle = []
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the idle connections; later borrowing fails."""
        self._closed = True
        if self._pid == os.getpid():
            self._drop_idle()
        else:
            self.disown()
