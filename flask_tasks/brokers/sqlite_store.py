"""The store part of ``sqlite:///``: records, revocations, counters, claims, heartbeats.

:class:`SQLiteStore` opens the file; :class:`.SQLiteBroker` (``sqlite.py``) adds the
queues and the joint steps in the same file. Each write is one ``BEGIN IMMEDIATE``
transaction; expired rows are deleted in bounded batches in passing (``delete_expired``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from .base import Store
from .sqlite_db import Database, SQLiteOptions, chunks, marks, parse_url
from .sqlite_schema import delete_expired

#: Seconds between housekeeping passes in one process.
_SWEEP_EVERY = 5.0


class SQLiteStore(Store):
    """A store kept in one SQLite file, safe for many processes on one machine."""

    kind = "sqlite"

    def __init__(self, url: str, key_prefix: str = "flask_tasks", **options: Any) -> None:
        path, query = parse_url(url)
        self.url = url
        self.key_prefix = key_prefix
        self._db = Database(path, key_prefix, SQLiteOptions.parse(url, query, options))
        self.path = self._db.path
        self._next_sweep = 0.0
        self._sql_put_result = f"INSERT OR REPLACE INTO {self._t['results']} VALUES (?, ?, ?)"

    # -- helpers (inside a transaction) ---------------------------------------------------

    @property
    def _t(self) -> dict[str, str]:
        return self._db.tables

    def _put_results(
        self, conn: sqlite3.Connection, records: Mapping[str, bytes], ttl: float, now: float
    ) -> None:
        expires_at = now + ttl if ttl else None
        conn.executemany(
            self._sql_put_result,
            [(task_id, record, expires_at) for task_id, record in records.items()],
        )
        self._sweep(conn, now)

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY
            delete_expired(conn, self._t, now)

    def _marked(self, table: str, task_ids: Sequence[str]) -> set[str]:
        """Those of ``task_ids`` with an unexpired row in ``table``."""
        marked: set[str] = set()
        now = self.now()
        with self._db.read() as conn:
            for chunk in chunks(list(task_ids)):
                marked.update(
                    row[0]
                    for row in conn.execute(
                        f"SELECT task_id FROM {self._t[table]} "
                        f"WHERE task_id IN ({marks(len(chunk))}) AND expires_at > ?",
                        (*chunk, now),
                    )
                )
        return marked

    # -- result records -------------------------------------------------------------------

    def set_result(self, task_id: str, record: bytes, ttl: float) -> None:
        self.set_results({task_id: record}, ttl)

    def set_results(self, records: Mapping[str, bytes], ttl: float) -> None:
        """All in one transaction: one commit."""
        if not records:
            return
        with self._db.write() as conn:
            self._put_results(conn, records, ttl, self.now())

    fences_records = True

    def fence(self, task_id: str, token: str, ttl: float) -> None:
        now = self.now()
        with self._db.write() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO {self._t['fences']} VALUES (?, ?, ?)",
                (task_id, token, now + ttl if ttl else None),
            )

    def set_results_fenced(self, records: Mapping[str, tuple[bytes, str]], ttl: float) -> list[str]:
        """All in one transaction, which reads the fences first."""
        if not records:
            return []
        with self._db.write() as conn:
            now = self.now()
            refused = [
                task_id
                for task_id, (_record, token) in records.items()
                if token
                and conn.execute(
                    f"SELECT 1 FROM {self._t['fences']} WHERE task_id = ? AND token != ? "
                    "AND (expires_at IS NULL OR expires_at > ?)",
                    (task_id, token, now),
                ).fetchone()
            ]
            conn.executemany(
                f"DELETE FROM {self._t['fences']} WHERE task_id = ?",
                [(task_id,) for task_id, (_record, token) in records.items() if not token],
            )
            kept = {task_id: rt[0] for task_id, rt in records.items() if task_id not in refused}
            if kept:
                self._put_results(conn, kept, ttl, now)
        return refused

    def _read_result(self, task_id: str) -> tuple[bytes | None, Optional[float]]:
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT record, expires_at FROM {self._t['results']} WHERE task_id = ? "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (task_id, self.now()),
            ).fetchone()
        return (None, None) if row is None else (bytes(row[0]), row[1])

    def get_result(self, task_id: str) -> bytes | None:
        return self._read_result(task_id)[0]

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        now = self.now()
        with self._db.read() as conn:
            for chunk in chunks(list(task_ids)):
                found.update(
                    (task_id, bytes(record))
                    for task_id, record in conn.execute(
                        f"SELECT task_id, record FROM {self._t['results']} "
                        f"WHERE task_id IN ({marks(len(chunk))}) "
                        "AND (expires_at IS NULL OR expires_at > ?)",
                        (*chunk, now),
                    )
                )
        return [found.get(task_id) for task_id in task_ids]

    def forget_result(self, task_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(f"DELETE FROM {self._t['results']} WHERE task_id = ?", (task_id,))

    def watch_result(self, task_id: str, last: bytes | None, timeout: float) -> bytes | None:
        deadline = time.monotonic() + max(0.0, timeout)
        notifier = self._db.notifier
        with notifier.watching():
            while True:
                token = notifier.token()
                current, expires_at = self._read_result(task_id)
                if current != last or time.monotonic() >= deadline:
                    return current
                wake_at = deadline
                if expires_at is not None:  # an expiry is a change too
                    wake_at = min(deadline, time.monotonic() + expires_at - self.now())
                notifier.wait(token, wake_at)

    # -- revocation -----------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], ttl: float, terminate: bool = False) -> None:
        tables = ["revoked", "terminate"] if terminate else ["revoked"]
        with self._db.write() as conn:
            expires_at = self.now() + ttl
            for table in tables:  # without terminate, an earlier terminate mark stays
                conn.executemany(
                    f"INSERT OR REPLACE INTO {self._t[table]} VALUES (?, ?)",
                    [(task_id, expires_at) for task_id in task_ids],
                )

    def revoked(self, task_ids: Sequence[str]) -> set[str]:
        return self._marked("revoked", task_ids)

    def terminating(self, task_ids: Sequence[str]) -> set[str]:
        return self._marked("terminate", task_ids)

    # -- counters, claims, heartbeats -----------------------------------------------------

    def incr(self, key: str, ttl: float) -> int:
        counters = self._t["counters"]
        with self._db.write() as conn:
            now = self.now()
            row = conn.execute(
                f"SELECT value FROM {counters} WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            value = (row[0] if row else 0) + 1
            conn.execute(
                f"INSERT OR REPLACE INTO {counters} VALUES (?, ?, ?)", (key, value, now + ttl)
            )
        return int(value)

    def claim(self, key: str, ttl: float) -> bool:
        claims = self._t["claims"]
        with self._db.write() as conn:
            now = self.now()
            conn.execute(f"DELETE FROM {claims} WHERE key = ? AND expires_at <= ?", (key, now))
            cursor = conn.execute(f"INSERT OR IGNORE INTO {claims} VALUES (?, ?)", (key, now + ttl))
            return cursor.rowcount == 1

    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        with self._db.write() as conn:
            now = self.now()
            conn.execute(
                f"INSERT OR REPLACE INTO {self._t['workers']} VALUES (?, ?, ?)",
                (worker, info, now + ttl),
            )
            self._sweep(conn, now)

    def workers(self) -> dict[str, bytes]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT name, info FROM {self._t['workers']} WHERE expires_at > ?",
                (self.now(),),
            ).fetchall()
        return {name: bytes(info) for name, info in rows}

    def set_value(self, namespace: str, key: str, value: bytes | None) -> None:
        with self._db.write() as conn:
            if value is None:
                conn.execute(
                    f"DELETE FROM {self._t['kept_values']} WHERE namespace = ? AND key = ?",
                    (namespace, key),
                )
            else:
                conn.execute(
                    f"INSERT OR REPLACE INTO {self._t['kept_values']} VALUES (?, ?, ?)",
                    (namespace, key, value),
                )

    def get_values(self, namespace: str) -> dict[str, bytes]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT key, value FROM {self._t['kept_values']} WHERE namespace = ?",
                (namespace,),
            ).fetchall()
        return {key: bytes(value) for key, value in rows}

    # -- connection -----------------------------------------------------------------------

    def ping(self) -> None:
        """Raise OperationalError unless the file can be read and written (a read-only
        file answers reads, but nothing could be published, reserved or settled)."""
        with self._db.read() as conn:
            conn.execute("PRAGMA schema_version").fetchone()
        self._db.check_writable()

    def close(self) -> None:
        self._db.close()

    def consuming(self, active: bool) -> None:
        """While a consumer runs, checkpoints leave its commits for a thread of their own."""
        self._db.consuming(active)

    def checkpoint(self) -> bool:
        """Fold the write-ahead log into the database file and truncate it, so no large
        ``-wal`` file is left while other processes keep the database open (call it at
        a clean exit). False when readers kept it from finishing."""
        return self._db.checkpoint()
