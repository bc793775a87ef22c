"""The same transaction: ``apply_async(..., connection=...)`` with the PostgreSQL broker.

When the broker's tables are in the app's own database, the message can be written by the
caller's connection, inside the caller's transaction: it exists exactly when the data does
(visible to workers at the commit, gone with a rollback), with no window in between and no
message lost to a crash after the commit.

``connection`` is a psycopg 3 connection, or a SQLAlchemy ``Connection`` or ``Session``
whose driver is psycopg 3 (``postgresql+psycopg://``). Anything else, another broker, or a
connection to another database is refused with an error saying what to use.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable

from .brokers.base import hide_password
from .exceptions import ImproperlyConfigured
from .message import Message
from .runtime import Runtime

if TYPE_CHECKING:
    from .brokers.postgres import PostgresBroker

#: ``execute(sql, params)`` on the caller's connection, returning the rows.
Execute = Callable[[str, Mapping[str, Any]], Sequence[Sequence[Any]]]

#: The database each caller's connection (psycopg's own object) is in.
_IDENTITIES: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def publish_in_transaction(runtime: Runtime, connection: Any, messages: Sequence[Message]) -> None:
    """Write ``messages`` and their PENDING records through ``connection``, in its
    transaction (at once if it is in autocommit mode); no retries: an error is the
    caller's transaction's."""
    broker = _postgres_broker(runtime)
    execute, raw = executor(connection)
    _check_same_database(broker, execute, raw, runtime)
    batch = runtime.producer.encode_batch(messages)
    runtime.producer.send(
        batch,
        write=lambda envelopes, records, ttl: broker.publish_through(
            execute, envelopes, records, ttl
        ),
    )


def _postgres_broker(runtime: Runtime) -> PostgresBroker:
    broker = runtime.connections.broker
    if broker is None or broker.kind != "postgresql":
        raise ImproperlyConfigured(
            "connection= writes the message in your database transaction, which needs the "
            "PostgreSQL broker in that database (TASKS_BROKER_URL = 'postgresql://...', and "
            f"no other TASKS_RESULT_BACKEND); the broker is "
            f"{hide_password(runtime.connections.broker_url)}"
            f"{' with a separate result backend' if runtime.connections.backend_url else ''}."
            " Use on_commit=True to send on commit with any broker."
        )
    from .brokers.postgres import PostgresBroker

    assert isinstance(broker, PostgresBroker)
    return broker


def executor(connection: Any) -> tuple[Execute, Any]:
    """``execute`` for a psycopg 3 connection or a SQLAlchemy connection or session on
    psycopg 3, and the psycopg connection underneath; ``TypeError`` for anything else."""
    module = type(connection).__module__.split(".")[0]
    if module == "sqlalchemy":
        return _sqlalchemy_executor(connection)
    if module == "psycopg":
        import psycopg

        if isinstance(connection, psycopg.Connection):
            return lambda sql, params: connection.execute(sql, params).fetchall(), connection
    raise TypeError(
        f"connection= takes a psycopg 3 connection, or a SQLAlchemy Connection or Session on "
        f"psycopg 3 (postgresql+psycopg://), got {_describe(connection)}"
        f"{'; psycopg2 is not supported: install psycopg 3' if module == 'psycopg2' else ''}"
    )


def _sqlalchemy_executor(connection: Any) -> tuple[Execute, Any]:
    import sqlalchemy
    import sqlalchemy.orm

    if isinstance(connection, sqlalchemy.orm.scoped_session):
        connection = connection()
    if isinstance(connection, sqlalchemy.orm.Session):
        connection = connection.connection()  # the session's, in its transaction
    if not isinstance(connection, sqlalchemy.Connection):
        raise TypeError(
            f"connection= takes a SQLAlchemy Connection or Session, got {_describe(connection)}"
        )
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        raise TypeError(
            f"connection= needs a PostgreSQL connection through psycopg 3; this one is "
            f"{dialect.name}+{dialect.driver}. Use a postgresql+psycopg:// database URL "
            "(pip install 'psycopg[binary]'), or on_commit=True"
        )
    raw = connection.connection.dbapi_connection
    sa_connection = connection

    def execute(sql: str, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        # Through SQLAlchemy, so that it begins its transaction if it has none yet.
        return list(sa_connection.exec_driver_sql(sql, dict(params)).fetchall())

    return execute, raw


def _check_same_database(
    broker: PostgresBroker, execute: Execute, raw: Any, runtime: Runtime
) -> None:
    from .brokers.postgres import IDENTITY_SQL

    theirs = _IDENTITIES.get(raw) if raw is not None else None
    if theirs is None:
        rows = execute(IDENTITY_SQL, {})
        theirs = tuple(rows[0]) if rows else ()
        if raw is not None:
            _IDENTITIES[raw] = theirs
    ours = broker.database_identity()
    if theirs != ours:
        raise ImproperlyConfigured(
            f"connection= is to database {theirs[0]!r} (schema {theirs[1]!r}), not the "
            f"broker's ({hide_password(runtime.connections.broker_url)}: database {ours[0]!r}, "
            f"schema {ours[1]!r}); the message must be written where the broker reads it. Point "
            "TASKS_BROKER_URL at the app's database, or use on_commit=True"
        )


def _describe(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"
