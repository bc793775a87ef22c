"""The store part of ``postgresql://``: records, revocations, counters, claims, heartbeats.

:class:`PostgresStore` is a result backend on its own (behind any transport);
:class:`.PostgresBroker` (``postgres.py``) adds the queues and the joint steps in the same
database. Each operation is one statement, so one round trip and one transaction. Every
write of a record notifies the ``results`` channel with the task id, in the same
transaction, which wakes ``watch_result`` in any process on any host.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import psycopg

from .base import Store, hide_password
from .postgres_db import Pool, parse_url
from .postgres_notify import Listener
from .postgres_schema import NOW, channel_names, create_schema, sweep_sql, table_names

#: Seconds between housekeeping passes in one process.
_SWEEP_EVERY = 5.0


class PostgresStore(Store):
    """A store kept in PostgreSQL tables, shared by every process on every host."""

    kind = "postgresql"

    def __init__(self, url: str, key_prefix: str = "flask_tasks", **options: Any) -> None:
        conninfo, parsed = parse_url(url, options)
        self.url = hide_password(url)
        self.key_prefix = key_prefix
        self.options = parsed
        self._t = table_names(key_prefix)
        self._channels = channel_names(key_prefix)
        self._pool = Pool(conninfo, url, parsed.pool_size, self._prepare)
        self._listener = Listener(self._pool.connect, self._channels.values(), self.url)
        self._next_sweep = 0.0
        self._sql_sweep = sweep_sql(self._t)
        self._sql_put = self._put_results_sql()

    def _prepare(self, connection: psycopg.Connection[Any]) -> None:
        create_schema(connection, self._t)

    def create_schema(self) -> bool:
        """Create the tables now (they are also created on first use); False if they
        were all there already."""
        with self._pool.connect() as connection, self._pool.errors():
            created: bool = create_schema(connection, self._t)
        return created

    # -- helpers ------------------------------------------------------------------------

    def _put_results_sql(self, unless: str = "") -> str:
        """A CTE storing ``%(rids)s``/``%(recs)s`` for ``%(ttl)s`` seconds (0: forever),
        but for the task ids the query ``unless`` returns (fencing refused them)."""
        skip = f"WHERE x.task_id NOT IN ({unless}) " if unless else ""
        return (
            f"stored_records AS (INSERT INTO {self._t['results']} AS r "
            "(task_id, record, expires_at) "
            f"SELECT task_id, record, CASE WHEN %(ttl)s::float8 > 0 "
            f"THEN {NOW} + %(ttl)s::float8 END "
            "FROM unnest(%(rids)s::text[], %(recs)s::bytea[]) AS x(task_id, record) "
            f"{skip}ON CONFLICT (task_id) DO UPDATE SET record = excluded.record, "
            "expires_at = excluded.expires_at)"
        )

    def _notify_results_sql(self, unless: str = "") -> str:
        """An expression that notifies the watchers of the records stored by
        :meth:`_put_results_sql` with the same ``unless``."""
        channel = self._channels["results"]
        skip = f" WHERE t NOT IN ({unless})" if unless else ""
        return f"(SELECT count(pg_notify('{channel}', t)) FROM unnest(%(rids)s::text[]) AS t{skip})"

    @staticmethod
    def _record_params(records: Mapping[str, bytes], ttl: float) -> dict[str, Any]:
        return {"rids": list(records), "recs": [bytes(r) for r in records.values()], "ttl": ttl}

    def _sweep(self, connection: psycopg.Connection[Any]) -> None:
        """Delete a batch of expired rows, at most every few seconds per process."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY
            connection.execute(self._sql_sweep)

    def _marked(self, task_ids: Sequence[str], column: str) -> set[str]:
        if not task_ids:
            return set()
        with self._pool.connection() as connection:
            rows = connection.execute(
                f"SELECT task_id FROM {self._t['revoked']} "
                f"WHERE task_id = ANY(%s::text[]) AND {column} > {NOW}",
                [list(task_ids)],
            ).fetchall()
        return {row[0] for row in rows}

    # -- result records -------------------------------------------------------------------

    def set_result(self, task_id: str, record: bytes, ttl: float) -> None:
        self.set_results({task_id: record}, ttl)

    def set_results(self, records: Mapping[str, bytes], ttl: float) -> None:
        """One statement: one round trip, one commit."""
        if not records:
            return
        with self._pool.connection() as connection:
            connection.execute(
                f"WITH {self._sql_put} SELECT {self._notify_results_sql()}",
                self._record_params(records, ttl),
            )
            self._sweep(connection)

    fences_records = True

    def server_time(self) -> float:
        with self._pool.connection() as connection:
            row = connection.execute(f"SELECT {NOW}").fetchone()
        return float(row[0]) if row is not None else time.time()

    def fence(self, task_id: str, token: str, ttl: float) -> None:
        with self._pool.connection() as connection:
            connection.execute(
                f"INSERT INTO {self._t['fences']} VALUES (%(id)s, %(token)s, CASE WHEN "
                f"%(ttl)s::float8 > 0 THEN {NOW} + %(ttl)s::float8 END) ON CONFLICT "
                "(task_id) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at",
                {"id": task_id, "token": token, "ttl": ttl},
            )

    def set_results_fenced(self, records: Mapping[str, tuple[bytes, str]], ttl: float) -> list[str]:
        """One statement: the records whose fence names another token are left out."""
        if not records:
            return []
        refused = (
            f"SELECT f.task_id FROM {self._t['fences']} AS f JOIN unnest(%(rids)s::text[], "
            "%(tokens)s::text[]) AS w(task_id, token) ON f.task_id = w.task_id "
            f"WHERE w.token <> '' AND f.token <> w.token "
            f"AND (f.expires_at IS NULL OR f.expires_at > {NOW})"
        )
        params = self._record_params({key: rt[0] for key, rt in records.items()}, ttl)
        params["tokens"] = [token for _record, token in records.values()]
        unless = "SELECT task_id FROM refused"
        with self._pool.connection() as connection:
            row = connection.execute(
                f"WITH refused AS ({refused}), cleared AS (DELETE FROM {self._t['fences']} "
                "WHERE task_id = ANY(ARRAY(SELECT task_id FROM unnest(%(rids)s::text[], "
                "%(tokens)s::text[]) AS c(task_id, token) WHERE token = ''))), "
                f"{self._put_results_sql(unless)} "
                f"SELECT ARRAY({unless}), {self._notify_results_sql(unless)}",
                params,
            ).fetchone()
            self._sweep(connection)
        return list(row[0]) if row is not None else []

    def _read_result(self, task_id: str) -> tuple[bytes | None, Optional[float]]:
        """The record and the seconds until it expires (None: never, or no record)."""
        with self._pool.connection() as connection:
            row = connection.execute(
                f"SELECT record, expires_at - {NOW} FROM {self._t['results']} "
                f"WHERE task_id = %s AND (expires_at IS NULL OR expires_at > {NOW})",
                [task_id],
            ).fetchone()
        return (None, None) if row is None else (bytes(row[0]), row[1])

    def get_result(self, task_id: str) -> bytes | None:
        return self._read_result(task_id)[0]

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        if not task_ids:
            return []
        with self._pool.connection() as connection:
            rows = connection.execute(
                f"SELECT task_id, record FROM {self._t['results']} "
                f"WHERE task_id = ANY(%s::text[]) AND (expires_at IS NULL OR expires_at > {NOW})",
                [list(task_ids)],
            ).fetchall()
        found = {task_id: bytes(record) for task_id, record in rows}
        return [found.get(task_id) for task_id in task_ids]

    def forget_result(self, task_id: str) -> None:
        with self._pool.connection() as connection:
            connection.execute(
                f"WITH gone AS (DELETE FROM {self._t['results']} WHERE task_id = %s) "
                f"SELECT pg_notify('{self._channels['results']}', %s)",
                [task_id, task_id],
            )

    def watch_result(self, task_id: str, last: bytes | None, timeout: float) -> bytes | None:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._listener.subscribe(self._channels["results"], [task_id]) as changed:
                current, expires_in = self._read_result(task_id)
                remaining = deadline - time.monotonic()
                if current != last or remaining <= 0:
                    return current
                if expires_in is not None:  # an expiry is a change too
                    remaining = min(remaining, max(0.0, expires_in))
                changed.wait(remaining)

    # -- revocation -----------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], ttl: float, terminate: bool = False) -> None:
        if not task_ids:
            return
        # A row lives while either mark does: revoking again never withdraws terminate.
        until = f"{NOW} + %(ttl)s::float8"
        with self._pool.connection() as connection:
            connection.execute(
                f"INSERT INTO {self._t['revoked']} AS r (task_id, expires_at, terminate_until) "
                f"SELECT t, {until}, CASE WHEN %(terminate)s THEN {until} END "
                "FROM unnest(%(ids)s::text[]) AS t "
                "ON CONFLICT (task_id) DO UPDATE SET "
                "expires_at = GREATEST(r.expires_at, excluded.expires_at), "
                "terminate_until = GREATEST(r.terminate_until, excluded.terminate_until)",
                {"ids": list(dict.fromkeys(task_ids)), "ttl": ttl, "terminate": terminate},
            )

    def revoked(self, task_ids: Sequence[str]) -> set[str]:
        return self._marked(task_ids, "expires_at")

    def terminating(self, task_ids: Sequence[str]) -> set[str]:
        return self._marked(task_ids, "terminate_until")

    # -- counters, claims, heartbeats -----------------------------------------------------

    def incr(self, key: str, ttl: float) -> int:
        counters = self._t["counters"]
        with self._pool.connection() as connection:
            row = connection.execute(
                f"INSERT INTO {counters} AS c VALUES (%(key)s, 1, {NOW} + %(ttl)s::float8) "
                f"ON CONFLICT (key) DO UPDATE SET value = CASE WHEN c.expires_at > {NOW} "
                "THEN c.value + 1 ELSE 1 END, expires_at = excluded.expires_at "
                "RETURNING value",
                {"key": key, "ttl": ttl},
            ).fetchone()
        assert row is not None
        return int(row[0])

    def claim(self, key: str, ttl: float) -> bool:
        claims = self._t["claims"]
        with self._pool.connection() as connection:
            row = connection.execute(
                f"INSERT INTO {claims} AS c VALUES (%(key)s, {NOW} + %(ttl)s::float8) "
                "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
                f"WHERE c.expires_at <= {NOW} RETURNING 1",
                {"key": key, "ttl": ttl},
            ).fetchone()
        return row is not None

    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        with self._pool.connection() as connection:
            connection.execute(
                f"INSERT INTO {self._t['workers']} AS w VALUES (%s, %s, {NOW} + %s::float8) "
                "ON CONFLICT (name) DO UPDATE SET info = excluded.info, "
                "expires_at = excluded.expires_at",
                [worker, bytes(info), ttl],
            )
            self._sweep(connection)

    def workers(self) -> dict[str, bytes]:
        with self._pool.connection() as connection:
            rows = connection.execute(
                f"SELECT name, info FROM {self._t['workers']} WHERE expires_at > {NOW}"
            ).fetchall()
        return {name: bytes(info) for name, info in rows}

    def set_value(self, namespace: str, key: str, value: bytes | None) -> None:
        table = self._t["kept_values"]
        with self._pool.connection() as connection:
            if value is None:
                connection.execute(
                    f"DELETE FROM {table} WHERE namespace = %s AND key = %s", [namespace, key]
                )
            else:
                connection.execute(
                    f"INSERT INTO {table} VALUES (%s, %s, %s) ON CONFLICT (namespace, key) "
                    "DO UPDATE SET value = excluded.value",
                    [namespace, key, bytes(value)],
                )

    def get_values(self, namespace: str) -> dict[str, bytes]:
        with self._pool.connection() as connection:
            rows = connection.execute(
                f"SELECT key, value FROM {self._t['kept_values']} WHERE namespace = %s",
                [namespace],
            ).fetchall()
        return {key: bytes(value) for key, value in rows}

    # -- connection -----------------------------------------------------------------------

    def ping(self) -> None:
        with self._pool.connection() as connection:
            connection.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self._listener.close()
        self._pool.close()
