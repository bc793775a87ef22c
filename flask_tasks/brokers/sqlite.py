"""``sqlite:///path``: the embedded broker, one file shared by every process on one machine.

The store part (records, revocations, counters, claims, heartbeats) is
:mod:`.sqlite_store`, the file and its connections :mod:`.sqlite_db`, the tables
:mod:`.sqlite_schema`.

Each operation is one ``BEGIN IMMEDIATE`` transaction, so it happens entirely or not at all
and never interleaves with another process's. The file runs in WAL mode: readers never
block the writer, and a commit costs one append to the log. Tables are named
``<key_prefix>_messages`` and so on, so several apps may share one file.

A message row is READY (in its queue, ordered by ``priority`` then ``seq``), DELAYED
(``due`` is its eta) or LEASED (``due`` is when its lease runs out). Partial indexes on
each state keep every step an index lookup, whatever the length of the queue.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

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
from .sqlite_db import chunks, marks
from .sqlite_schema import DELAYED, LEASED, READY, back_of_queue, front_of_queue, recover_messages
from .sqlite_store import SQLiteStore


class SQLiteBroker(SQLiteStore, Broker):
    """A transport and store in one SQLite file, safe for many processes on one machine.

    The store part (records, revocations, counters, claims, heartbeats) is
    :class:`.SQLiteStore`.
    """

    kind = "sqlite"

    def __init__(self, url: str, key_prefix: str = "flask_tasks", **options: Any) -> None:
        super().__init__(url, key_prefix, **options)
        self._sql_back = back_of_queue(self._db.tables)
        self._sql_front = front_of_queue(self._db.tables)

    # -- helpers (inside a transaction) ---------------------------------------------------

    def _store(
        self,
        conn: sqlite3.Connection,
        message_id: str,
        queue: str,
        priority: int,
        body: bytes,
        eta: Optional[float],
        now: float,
    ) -> None:
        """Insert or replace a message: delayed until ``eta``, else at the back of its queue."""
        m = self._t["messages"]
        columns = f"INSERT OR REPLACE INTO {m} (id, queue, priority, body, state, due, seq)"
        if eta is not None and eta > now:
            conn.execute(
                f"{columns} VALUES (?, ?, ?, ?, {DELAYED}, ?, 0)",
                (message_id, queue, priority, body, eta),
            )
        else:
            conn.execute(
                f"{columns} VALUES (?, ?, ?, ?, {READY}, 0, {self._sql_back})",
                (message_id, queue, priority, body, queue, priority),
            )

    def _to_front(
        self, conn: sqlite3.Connection, message_id: str, queue: str, priority: int
    ) -> None:
        conn.execute(
            f"UPDATE {self._t['messages']} SET state = {READY}, due = 0, "
            f"seq = {self._sql_front} WHERE id = ?",
            (queue, priority, message_id),
        )

    # -- publishing -----------------------------------------------------------------------

    def publish_with_records(
        self, envelopes: Sequence[Envelope], records: Mapping[str, bytes], record_ttl: float
    ) -> None:
        for envelope in envelopes:
            check_envelope(envelope)
        now = self.now()
        with self._db.write(self.publish_timeout) as conn:
            if records:
                self._put_results(conn, records, record_ttl, now)
            for env in envelopes:
                self._store(conn, env.id, env.queue, env.priority, env.body, env.eta, now)

    # -- consuming ------------------------------------------------------------------------

    def reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        with self._db.write() as conn:
            return self._reserve(conn, queues, count, lease, self.now())

    def _reserve(
        self, conn: sqlite3.Connection, queues: Sequence[str], count: int, lease: float, now: float
    ) -> list[Delivery]:
        m, revoked = self._t["messages"], self._t["revoked"]
        taken: list[Delivery] = []
        recover_messages(conn, self._t, now)
        self._sweep(conn, now)
        for queue in queues:
            wanted = count - len(taken)
            if wanted <= 0:
                break
            rows = conn.execute(
                f"SELECT id, priority, body, EXISTS (SELECT 1 FROM {revoked} AS r "
                f"WHERE r.task_id = {m}.id AND r.expires_at > ?), deliveries + 1 "
                f"FROM {m} WHERE state = {READY} AND queue = ? "
                "ORDER BY priority, seq LIMIT ?",
                (now, queue, wanted),
            ).fetchall()
            # One random draw per batch: a token need only differ from every other lease's.
            base = secrets.token_hex(6)
            tokens = [f"{base}{number:x}" for number in range(len(rows))]
            conn.executemany(
                f"UPDATE {m} SET state = {LEASED}, due = ?, deliveries = ?, token = ? WHERE id = ?",
                [(now + lease, row[4], token, row[0]) for row, token in zip(rows, tokens)],
            )
            taken.extend(
                Delivery(row[0], queue, row[1], bytes(row[2]), bool(row[3]), row[4], token)
                for row, token in zip(rows, tokens)
            )
        return taken

    def ack_and_reserve(
        self,
        settlements: Sequence[Settlement],
        record_ttl: float,
        queues: Sequence[str],
        count: int,
        lease: float,
    ) -> tuple[list[str], list[Delivery]]:
        """One transaction: one lock, one commit for a batch of outcomes and the next batch."""
        with self._db.write() as conn:
            now = self.now()
            refused = self._ack(conn, settlements, record_ttl, now)
            return refused, self._reserve(conn, queues, count, lease, now)

    def _next_wake(self, queues: Sequence[str]) -> Optional[float]:
        """0 if ``queues`` hold ready work, else the Unix time of the next due delayed
        message or lease (None if there is none)."""
        m = self._t["messages"]
        with self._db.read() as conn:
            if (
                queues
                and conn.execute(
                    f"SELECT 1 FROM {m} WHERE state = {READY} AND queue IN ({marks(len(queues))}) "
                    "LIMIT 1",
                    tuple(queues),
                ).fetchone()
            ):
                return 0.0
            times = [
                conn.execute(f"SELECT MIN(due) FROM {m} WHERE state = {state}").fetchone()[0]
                for state in (DELAYED, LEASED)
            ]
        known = [due for due in times if due is not None]
        return min(known) if known else None

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + max(0.0, timeout)
        notifier = self._db.notifier
        with notifier.watching():
            while time.monotonic() < deadline:
                token = notifier.token()
                wake_at = self._next_wake(queues)
                if wake_at is not None:
                    delay = wake_at - self.now()
                    if delay <= 0:
                        return
                    deadline = min(deadline, time.monotonic() + delay)
                notifier.wait(token, deadline)

    def extend(self, ids: Iterable[Held], lease: float) -> None:
        leases = [lease_of(held) for held in ids]
        if not leases:
            return
        m = self._t["messages"]
        with self._db.write() as conn:
            deadline = self.now() + lease
            bare = [message_id for message_id, token in leases if not token]
            for chunk in chunks(bare):
                conn.execute(
                    f"UPDATE {m} SET due = ? "
                    f"WHERE state = {LEASED} AND id IN ({marks(len(chunk))})",
                    (deadline, *chunk),
                )
            conn.executemany(
                f"UPDATE {m} SET due = ? WHERE state = {LEASED} AND id = ? AND token = ?",
                [(deadline, message_id, token) for message_id, token in leases if token],
            )

    def ack_with_records(self, settlements: Sequence[Settlement], record_ttl: float) -> list[str]:
        """All in one transaction: one commit, however many."""
        if not settlements:
            return []
        with self._db.write() as conn:
            return self._ack(conn, settlements, record_ttl, self.now())

    def _ack(
        self,
        conn: sqlite3.Connection,
        settlements: Sequence[Settlement],
        record_ttl: float,
        now: float,
    ) -> list[str]:
        m = self._t["messages"]
        refused: list[str] = []
        records: dict[str, bytes] = {}
        for held, record in settlements:
            message_id, token = lease_of(held)
            if token:
                cursor = conn.execute(
                    f"DELETE FROM {m} WHERE id = ? AND token = ?", (message_id, token)
                )
                if cursor.rowcount == 0:
                    refused.append(message_id)
                    continue
            else:
                conn.execute(f"DELETE FROM {m} WHERE id = ?", (message_id,))
            if record is not None:
                records[message_id] = record
        if records:
            self._put_results(conn, records, record_ttl, now)
        return refused

    def release_with_record(
        self,
        message_id: Held,
        body: bytes | None,
        eta: float | None,
        record: bytes | None,
        record_ttl: float,
    ) -> bool:
        message_id, token = lease_of(message_id)
        now = self.now()
        m = self._t["messages"]
        with self._db.write() as conn:
            row = conn.execute(
                f"SELECT queue, priority, body, state, deliveries, token FROM {m} WHERE id = ?",
                (message_id,),
            ).fetchone()
            if token and (row is None or row[5] != token):
                return False
            if row is not None and (row[3] == LEASED or body is not None):
                queue, priority, old_body, _state, deliveries, _token = row
                new_body = old_body if body is None else body
                if eta is None:
                    self._store(conn, message_id, queue, priority, new_body, None, now)
                    self._to_front(conn, message_id, queue, priority)
                else:
                    self._store(conn, message_id, queue, priority, new_body, eta, now)
                # This delivery ended in a release: it no longer counts.
                conn.execute(
                    f"UPDATE {m} SET deliveries = ? WHERE id = ?",
                    (max(0, deliveries - 1), message_id),
                )
            if record is not None:
                self._put_results(conn, {message_id: record}, record_ttl, now)
        return True

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self._db.write() as conn:
            conn.execute(f"DELETE FROM {self._t['messages']} WHERE id = ?", (delivery.id,))
            conn.execute(
                f"INSERT OR REPLACE INTO {self._t['dead']} VALUES (?, ?, ?, ?, ?, ?)",
                (
                    delivery.id,
                    delivery.queue,
                    delivery.priority,
                    bytes(delivery.body),
                    str(reason),
                    self.now(),
                ),
            )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT id, queue, priority, body, reason, failed_at FROM {self._t['dead']} "
                "ORDER BY failed_at DESC, rowid DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        return [DeadLetter(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    def retry_dead_letter(self, message_id: str) -> bool:
        dead = self._t["dead"]
        with self._db.write() as conn:
            row = conn.execute(
                f"SELECT queue, priority, body FROM {dead} WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                return False
            conn.execute(f"DELETE FROM {dead} WHERE id = ?", (message_id,))
            self._store(conn, message_id, row[0], row[1], row[2], None, self.now())
            return True

    def delete_dead_letter(self, message_id: str) -> bool:
        with self._db.write() as conn:
            cursor = conn.execute(f"DELETE FROM {self._t['dead']} WHERE id = ?", (message_id,))
            return cursor.rowcount > 0

    # -- inspection -----------------------------------------------------------------------

    def held(self, message_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self._db.read() as conn:
            for chunk in chunks(list(message_ids)):
                found.update(
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM {self._t['messages']} "
                        f"WHERE state = {LEASED} AND id IN ({marks(len(chunk))})",
                        tuple(chunk),
                    )
                )
        return found

    def queue_length(self, queue: str) -> int:
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT COUNT(*) FROM {self._t['messages']} WHERE state = {READY} AND queue = ?",
                (queue,),
            ).fetchone()
        return int(row[0])

    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        counts = {queue: {READY: 0, DELAYED: 0, LEASED: 0} for queue in queues}
        marks = ", ".join("?" for _ in queues)
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT queue, state, COUNT(*) FROM {self._t['messages']} "
                f"WHERE queue IN ({marks}) GROUP BY queue, state",
                list(queues),
            ).fetchall()
        for queue, state, count in rows:
            counts[queue][state] = int(count)
        return {
            queue: QueueCounts(by_state[READY], by_state[DELAYED], by_state[LEASED])
            for queue, by_state in counts.items()
        }

    def purge(self, queue: str) -> int:
        with self._db.write() as conn:
            cursor = conn.execute(
                f"DELETE FROM {self._t['messages']} WHERE state = {READY} AND queue = ?",
                (queue,),
            )
            return int(cursor.rowcount)
