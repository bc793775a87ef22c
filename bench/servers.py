"""The PostgreSQL server and RabbitMQ vhost of one run, for the configurations that use them.

Both are opened the first time a configuration asks, and kept until the run ends:

- PostgreSQL: the machine's server (``postgresql://postgres@127.0.0.1:5432``, trust auth,
  or ``FLASK_TASKS_POSTGRES_URL``) when it answers, else a throwaway one made with
  ``initdb`` (``tests/postgres_server.py``). Each phase gets a database of its own,
  ``flask_tasks_bench_<random>``, dropped when the phase ends (as SQLite gets a fresh file).
- RabbitMQ: a vhost of the run's own on the machine's server (127.0.0.1:5672, guest/guest),
  else on a throwaway ``rabbitmq-server`` (``tests/rabbitmq_server.py``); deleted at the end.
  Each phase uses a key prefix of its own in it.

When neither the machine's server nor a throwaway one works, :class:`Unavailable` says why,
and the harness skips the configurations that need it (RESULTS.md says so).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Optional, Union


class Unavailable(RuntimeError):
    """A configuration's server can neither be reached nor started."""


class Servers:
    """Opens what a broker needs at most once per run, on ``stack`` (closed with it)."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        openers: Optional[Mapping[str, Callable[[], Any]]] = None,
    ) -> None:
        self.stack = stack
        #: Per broker, what opens its server: a context manager yielding its URL.
        self.openers = dict(OPENERS if openers is None else openers)
        #: Per broker: its URL once open, or the error that made it unavailable.
        self.opened: dict[str, Union[str, Unavailable]] = {}

    def require(self, broker: str) -> str:
        """The admin URL (PostgreSQL) or vhost URL (RabbitMQ) of ``broker``; ``""`` for a
        broker that needs no server of its own. Raises :class:`Unavailable`."""
        if broker not in self.openers:
            return ""
        if broker not in self.opened:
            try:
                self.opened[broker] = str(self.stack.enter_context(self.openers[broker]()))
            except Exception as error:  # any failure means "skip", said plainly
                self.opened[broker] = Unavailable(f"{broker}: {error}")
        found = self.opened[broker]
        if isinstance(found, Unavailable):
            raise found
        return found

    def describe(self) -> dict[str, str]:
        """Server and version of each broker opened, for RESULTS.md."""
        described = {}
        for broker, found in self.opened.items():
            if isinstance(found, Unavailable):
                continue
            try:
                version = _VERSIONS[broker](found)
            except Exception as error:  # a description, not a measurement
                version = f"version unknown ({error})"
            where = found.split("@", 1)[-1].rsplit("/", 1)[0]
            machine = where.endswith((":5432", ":5672"))
            described[broker] = f"{version} at {where}" + ("" if machine else " (throwaway)")
        return described

    @contextlib.contextmanager
    def postgres_database(self) -> Iterator[str]:
        """A fresh database ``flask_tasks_bench_<random>``, dropped (with any connection
        still open to it) when the context ends."""
        import psycopg

        admin_url = self.require("postgresql")
        name = f"flask_tasks_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_server() -> Any:
    try:
        from postgres_server import postgres_server  # tests/postgres_server.py
    except ImportError as error:
        raise Unavailable(
            f"{error}: install the postgresql extra (pip install -e '.[postgresql]')"
        ) from error
    return postgres_server()


def _rabbitmq_vhost() -> Any:
    try:
        import pika  # noqa: F401 - the amqp extra, needed by the broker itself
    except ImportError as error:
        raise Unavailable(f"{error}: install the amqp extra (pip install -e '.[amqp]')") from error
    from rabbitmq_server import rabbitmq_vhost  # tests/rabbitmq_server.py

    return rabbitmq_vhost()


def _postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def _rabbitmq_version(url: str) -> str:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        version = connection._impl.server_properties.get("version", b"?")
    finally:
        connection.close()
    return f"RabbitMQ {version.decode() if isinstance(version, bytes) else version}"


OPENERS: dict[str, Callable[[], Any]] = {"postgresql": _postgres_server, "amqp": _rabbitmq_vhost}
_VERSIONS: dict[str, Callable[[str], str]] = {
    "postgresql": _postgres_version,
    "amqp": _rabbitmq_version,
}
