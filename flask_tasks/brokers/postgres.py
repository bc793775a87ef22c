"""``postgresql://``: queues and results in the database a Flask app often already has.

The store part (records, revocations, counters, claims, heartbeats) is
:mod:`.postgres_store`, the connections :mod:`.postgres_db`, the wake-ups
:mod:`.postgres_notify`, the tables and the reserve function :mod:`.postgres_schema`.

A message row is READY (in its queue, ordered by ``priority`` then ``seq``), DELAYED
(``due`` is its eta) or LEASED (``due`` is when its lease runs out, by the database's
clock). Partial indexes on each state keep every step an index lookup, whatever the length
of the queue. ``reserve`` is one call of a PL/pgSQL function that takes rows with
``FOR UPDATE SKIP LOCKED``: consumers never wait for each other and never take the same
message. Each joint step is one SQL statement: one round trip, one transaction, and its
``NOTIFY`` is delivered only once it is committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Optional

from .base import (
    Broker,
    DeadLetter,
    Delivery,
    Envelope,
    Held,
    QueueCounts,
    Settlement,
    check_envelope,
    lease_of,
)
from .postgres_schema import DELAYED, LEASED, NOW, READY, SEQ_BLOCK
from .postgres_store import PostgresStore

#: Most envelopes one statement publishes (positions within a sequence block).
_PUBLISH_CHUNK = 10_000

#: The database a connection is in, told apart from any other on any server: its name,
#: the schema the tables are in, its oid and the cluster's system identifier.
IDENTITY_SQL = (
    "SELECT current_database(), current_schema(), (SELECT oid FROM pg_database "
    "WHERE datname = current_database()), (SELECT system_identifier FROM pg_control_system())"
)


class PostgresBroker(PostgresStore, Broker):
    """A transport and store in PostgreSQL tables, shared by every process on every host.

    The store part (records, revocations, counters, claims, heartbeats) is
    :class:`.PostgresStore`.
    """

    kind = "postgresql"

    def __init__(self, url: str, key_prefix: str = "flask_tasks", **options: Any) -> None:
        super().__init__(url, key_prefix, **options)
        self._sql_publish = self._publish_sql()
        self._sql_release = self._release_sql()
        self._identity: Optional[tuple[Any, ...]] = None
        self._sql_ack = self._ack_sql()

    # -- statements ----------------------------------------------------------------------

    def _notify_work_sql(self, rows: str) -> str:
        channel = self._channels["work"]
        return (
            f"(SELECT count(pg_notify('{channel}', q)) "
            f"FROM (SELECT DISTINCT queue FROM {rows}) AS w(q))"
        )

    def _publish_sql(self) -> str:
        m = self._t["messages"]
        return (
            f"WITH block AS (SELECT nextval('{self._t['back']}') AS v), {self._sql_put}, "
            f"stored AS (INSERT INTO {m} AS m (id, queue, priority, body, state, due, seq) "
            "SELECT e.id, e.queue, e.priority, e.body, "
            f"CASE WHEN e.eta > {NOW} THEN {DELAYED} ELSE {READY} END, "
            f"CASE WHEN e.eta > {NOW} THEN e.eta ELSE 0 END, block.v * {SEQ_BLOCK} + e.pos "
            "FROM unnest(%(ids)s::text[], %(queues)s::text[], %(priorities)s::smallint[], "
            "%(bodies)s::bytea[], %(etas)s::float8[]) WITH ORDINALITY "
            "AS e(id, queue, priority, body, eta, pos), block "
            "ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, "
            "priority = excluded.priority, body = excluded.body, state = excluded.state, "
            "due = excluded.due, seq = excluded.seq, deliveries = 0, token = '' "
            "RETURNING m.queue) "
            f"SELECT {self._notify_work_sql('stored')} + {self._notify_results_sql()}"
        )

    def _release_sql(self) -> str:
        # The fence is the UPDATE's own WHERE, which PostgreSQL checks again on the row's
        # latest version if a reserve changed it meanwhile: a row that is there but not
        # held (and no new body) is updated with its own values, so that "not refused"
        # is "updated". The record is stored only when it was not refused.
        m, eta = self._t["messages"], "%(eta)s::float8"
        moves = f"(m.state = {LEASED} OR %(body)s::bytea IS NOT NULL)"
        refused = "SELECT id FROM refused"
        return (
            f"WITH moved AS (UPDATE {m} AS m SET "
            f"body = CASE WHEN {moves} THEN COALESCE(%(body)s::bytea, m.body) ELSE m.body END, "
            f"state = CASE WHEN NOT {moves} THEN m.state "
            f"WHEN {eta} > {NOW} THEN {DELAYED} ELSE {READY} END, "
            f"due = CASE WHEN NOT {moves} THEN m.due WHEN {eta} > {NOW} THEN {eta} ELSE 0 END, "
            f"seq = CASE WHEN NOT {moves} THEN m.seq WHEN {eta} IS NULL THEN "
            f"(SELECT nextval('{self._t['front']}')) * {SEQ_BLOCK} "
            f"WHEN {eta} > {NOW} THEN m.seq "
            f"ELSE (SELECT nextval('{self._t['back']}')) * {SEQ_BLOCK} END, "
            # This delivery ended in a release: it no longer counts, and its token is void.
            f"deliveries = CASE WHEN {moves} THEN greatest(m.deliveries - 1, 0) "
            "ELSE m.deliveries END, "
            f"token = CASE WHEN {moves} THEN '' ELSE m.token END "
            "WHERE m.id = %(id)s AND (%(token)s::text = '' OR m.token = %(token)s::text) "
            "RETURNING m.queue), "
            "refused AS (SELECT %(id)s::text AS id "
            "WHERE %(token)s::text <> '' AND NOT EXISTS (SELECT 1 FROM moved)), "
            f"{self._put_results_sql(refused)} "
            "SELECT NOT EXISTS (SELECT 1 FROM refused), "
            f"{self._notify_work_sql('moved')} + {self._notify_results_sql(refused)}"
        )

    def _ack_sql(self) -> str:
        """Delete each ``(id, token)`` (token "": any lease) and store the records of
        those not refused; returns the refused ids in the order given."""
        refused = "SELECT id FROM refused"
        return (
            "WITH settled AS (SELECT * FROM unnest(%(ids)s::text[], %(tokens)s::text[]) "
            "WITH ORDINALITY AS s(id, token, n)), "
            f"acked AS (DELETE FROM {self._t['messages']} AS m USING settled AS s "
            "WHERE m.id = s.id AND (s.token = '' OR m.token = s.token) RETURNING m.id), "
            "refused AS (SELECT s.id, s.n FROM settled AS s "
            "WHERE s.token <> '' AND s.id NOT IN (SELECT id FROM acked)), "
            f"{self._put_results_sql(refused)} "
            "SELECT ARRAY(SELECT id FROM refused ORDER BY n), "
            f"{self._notify_results_sql(refused)}"
        )

    # -- publishing -----------------------------------------------------------------------

    def publish_with_records(
        self, envelopes: Sequence[Envelope], records: Mapping[str, bytes], record_ttl: float
    ) -> None:
        statements = self._publish_params(envelopes, records, record_ttl)
        if not statements:
            self.set_results(records, record_ttl)
            return
        with self._pool.connection() as connection:
            with connection.transaction():
                for params in statements:
                    connection.execute(self._sql_publish, params)
            if records:
                self._sweep(connection)

    def publish_through(
        self,
        execute: Callable[[str, Mapping[str, Any]], object],
        envelopes: Sequence[Envelope],
        records: Mapping[str, bytes],
        record_ttl: float,
    ) -> None:
        """Publish with ``execute(sql, params)``, a caller's connection to this database:
        the messages and records become visible when the caller commits, and vanish if
        it rolls back; workers are woken at the commit (``NOTIFY`` is transactional)."""
        statements = self._publish_params(envelopes, records, record_ttl)
        if not statements and records:
            execute(
                f"WITH {self._sql_put} SELECT {self._notify_results_sql()}",
                self._record_params(records, record_ttl),
            )
        for params in statements:
            execute(self._sql_publish, params)

    def database_identity(self) -> tuple[Any, ...]:
        """What tells this database from any other (:data:`IDENTITY_SQL`); creates the
        tables if they are missing, as every first use does."""
        if self._identity is None:
            with self._pool.connection() as connection:
                row = connection.execute(IDENTITY_SQL).fetchone()
            self._identity = tuple(row or ())
        return self._identity

    def _publish_params(
        self, envelopes: Sequence[Envelope], records: Mapping[str, bytes], record_ttl: float
    ) -> list[dict[str, Any]]:
        """The parameters of each publish statement (the records go with the first)."""
        for envelope in envelopes:
            check_envelope(envelope)
        # One id twice in one statement would be an error: the last one wins.
        latest = list({envelope.id: envelope for envelope in envelopes}.values())
        statements = []
        for start in range(0, len(latest), _PUBLISH_CHUNK):
            chunk = latest[start : start + _PUBLISH_CHUNK]
            params = self._record_params(records if start == 0 else {}, record_ttl)
            params.update(
                ids=[e.id for e in chunk],
                queues=[e.queue for e in chunk],
                priorities=[e.priority for e in chunk],
                bodies=[bytes(e.body) for e in chunk],
                etas=[e.eta or 0.0 for e in chunk],
            )
            statements.append(params)
        return statements

    # -- consuming ------------------------------------------------------------------------

    def reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        if count <= 0 or not queues:
            return []
        with self._pool.connection() as connection:
            rows = connection.execute(
                f"SELECT * FROM {self._t['reserve']}(%s::text[], %s, %s::float8)",
                [list(queues), count, lease],
            ).fetchall()
            self._sweep(connection)
        position = {queue: index for index, queue in reversed(list(enumerate(queues)))}
        rows.sort(key=lambda row: (position[row[1]], row[2], row[5]))
        return [
            Delivery(row[0], row[1], row[2], bytes(row[3]), bool(row[4]), row[6], row[7])
            for row in rows
        ]

    def _next_wake(self, queues: Sequence[str]) -> Optional[float]:
        """0 if ``queues`` hold ready work, else the seconds until the next delayed
        message falls due or lease runs out (None if there is none)."""
        m = self._t["messages"]
        with self._pool.connection() as connection:
            row = connection.execute(
                f"SELECT CASE WHEN EXISTS (SELECT 1 FROM {m} WHERE state = {READY} "
                "AND queue = ANY(%s::text[])) THEN 0 ELSE "
                f"LEAST((SELECT min(due) FROM {m} WHERE state = {DELAYED}), "
                f"(SELECT min(due) FROM {m} WHERE state = {LEASED})) - {NOW} END",
                [list(queues)],
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._listener.subscribe(self._channels["work"], queues) as published:
            while not published.is_set():
                remaining = deadline - time.monotonic()
                wake_in = self._next_wake(queues)
                if remaining <= 0 or (wake_in is not None and wake_in <= 0):
                    return
                published.wait(remaining if wake_in is None else min(remaining, wake_in))

    def extend(self, ids: Iterable[Held], lease: float) -> None:
        leases = [lease_of(held) for held in ids]
        if not leases:
            return
        with self._pool.connection() as connection:
            connection.execute(
                f"UPDATE {self._t['messages']} AS m SET due = {NOW} + %s::float8 "
                "FROM unnest(%s::text[], %s::text[]) AS s(id, token) "
                f"WHERE m.state = {LEASED} AND m.id = s.id "
                "AND (s.token = '' OR m.token = s.token)",
                [lease, [i for i, _t in leases], [t for _i, t in leases]],
            )

    def ack_with_records(self, settlements: Sequence[Settlement], record_ttl: float) -> list[str]:
        """One statement, however many: one round trip, one commit."""
        if not settlements:
            return []
        leases = [lease_of(held) for held, _record in settlements]
        records = {i: r for (i, _t), (_held, r) in zip(leases, settlements) if r is not None}
        params = self._record_params(records, record_ttl)
        params.update(ids=[i for i, _t in leases], tokens=[t for _i, t in leases])
        with self._pool.connection() as connection:
            row = connection.execute(self._sql_ack, params).fetchone()
            if records:
                self._sweep(connection)
        return list(row[0]) if row else []

    def release_with_record(
        self,
        message_id: Held,
        body: bytes | None,
        eta: float | None,
        record: bytes | None,
        record_ttl: float,
    ) -> bool:
        task_id, token = lease_of(message_id)
        params = self._record_params({} if record is None else {task_id: record}, record_ttl)
        params.update(id=task_id, token=token, body=None if body is None else bytes(body), eta=eta)
        with self._pool.connection() as connection:
            row = connection.execute(self._sql_release, params).fetchone()
        return bool(row and row[0])

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self._pool.connection() as connection:
            connection.execute(
                f"WITH gone AS (DELETE FROM {self._t['messages']} WHERE id = %(id)s) "
                f"INSERT INTO {self._t['dead']} AS d VALUES (%(id)s, %(queue)s, "
                f"%(priority)s, %(body)s, %(reason)s, {NOW}, nextval('{self._t['back']}')) "
                "ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, "
                "priority = excluded.priority, body = excluded.body, "
                "reason = excluded.reason, failed_at = excluded.failed_at, n = excluded.n",
                {
                    "id": delivery.id,
                    "queue": delivery.queue,
                    "priority": delivery.priority,
                    "body": bytes(delivery.body),
                    "reason": str(reason),
                },
            )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._pool.connection() as connection:
            rows = connection.execute(
                f"SELECT id, queue, priority, body, reason, failed_at FROM {self._t['dead']} "
                "ORDER BY failed_at DESC, n DESC LIMIT %s",
                [max(0, limit)],
            ).fetchall()
        return [DeadLetter(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    def retry_dead_letter(self, message_id: str) -> bool:
        m = self._t["messages"]
        with self._pool.connection() as connection:
            row = connection.execute(
                f"WITH letter AS (DELETE FROM {self._t['dead']} WHERE id = %s "
                "RETURNING id, queue, priority, body), "
                f"stored AS (INSERT INTO {m} AS m (id, queue, priority, body, state, due, seq) "
                f"SELECT id, queue, priority, body, {READY}, 0, "
                f"nextval('{self._t['back']}') * {SEQ_BLOCK} FROM letter "
                "ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, "
                "priority = excluded.priority, body = excluded.body, state = excluded.state, "
                "due = excluded.due, seq = excluded.seq, deliveries = 0, token = '' "
                "RETURNING m.queue) "
                f"SELECT {self._notify_work_sql('stored')}",
                [message_id],
            ).fetchone()
        return row is not None and row[0] > 0

    def delete_dead_letter(self, message_id: str) -> bool:
        with self._pool.connection() as connection:
            cursor = connection.execute(
                f"DELETE FROM {self._t['dead']} WHERE id = %s", [message_id]
            )
            return cursor.rowcount > 0

    # -- inspection -----------------------------------------------------------------------

    def queue_length(self, queue: str) -> int:
        with self._pool.connection() as connection:
            row = connection.execute(
                f"SELECT count(*) FROM {self._t['messages']} WHERE state = {READY} AND queue = %s",
                [queue],
            ).fetchone()
        return int(row[0]) if row else 0

    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        with self._pool.connection() as connection:
            rows = connection.execute(
                f"SELECT queue, state, count(*) FROM {self._t['messages']} "
                "WHERE queue = ANY(%s) GROUP BY queue, state",
                [list(queues)],
            ).fetchall()
        found = {(queue, state): int(count) for queue, state, count in rows}
        return {
            queue: QueueCounts(
                found.get((queue, READY), 0),
                found.get((queue, DELAYED), 0),
                found.get((queue, LEASED), 0),
            )
            for queue in queues
        }

    def purge(self, queue: str) -> int:
        with self._pool.connection() as connection:
            cursor = connection.execute(
                f"DELETE FROM {self._t['messages']} WHERE state = {READY} AND queue = %s",
                [queue],
            )
            return int(cursor.rowcount)
