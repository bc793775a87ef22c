"""The SQLite broker's schema: tables and indexes, named after the key prefix.

Every table is created with ``CREATE ... IF NOT EXISTS``, so a file made by an older
version gains the tables added since (the ``terminate``, ``claims`` and ``workers``
tables) the first time a newer version opens it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

#: Message states (the ``state`` column).
READY, DELAYED, LEASED = 0, 1, 2
#: Most delayed (and, separately, expired) messages one ``reserve`` moves back to queues.
_RECOVER_BATCH = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS {messages} (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    body BLOB NOT NULL,
    state INTEGER NOT NULL,
    due REAL NOT NULL,
    seq INTEGER NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    token TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS {messages_ready} ON {messages} (queue, priority, seq)
    WHERE state = 0;
CREATE INDEX IF NOT EXISTS {messages_delayed} ON {messages} (due) WHERE state = 1;
CREATE INDEX IF NOT EXISTS {messages_leased} ON {messages} (due) WHERE state = 2;
CREATE TABLE IF NOT EXISTS {results} (
    task_id TEXT PRIMARY KEY,
    record BLOB NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS {results_expiry} ON {results} (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {dead} (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {dead_recent} ON {dead} (failed_at);
CREATE TABLE IF NOT EXISTS {revoked} (task_id TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS {revoked_expiry} ON {revoked} (expires_at);
CREATE TABLE IF NOT EXISTS {counters} (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {counters_expiry} ON {counters} (expires_at);
CREATE TABLE IF NOT EXISTS {terminate} (task_id TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS {terminate_expiry} ON {terminate} (expires_at);
CREATE TABLE IF NOT EXISTS {claims} (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS {claims_expiry} ON {claims} (expires_at);
CREATE TABLE IF NOT EXISTS {fences} (task_id TEXT PRIMARY KEY, token TEXT NOT NULL,
    expires_at REAL);
CREATE INDEX IF NOT EXISTS {fences_expiry} ON {fences} (expires_at);
CREATE TABLE IF NOT EXISTS {workers} (
    name TEXT PRIMARY KEY,
    info BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {workers_expiry} ON {workers} (expires_at);
CREATE TABLE IF NOT EXISTS {kept_values} (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""

#: Most expired rows of each kind one housekeeping pass deletes.
_SWEEP_BATCH = 500
#: Tables whose rows expire, and their key column.
_EXPIRING = (
    ("results", "task_id"),
    ("revoked", "task_id"),
    ("terminate", "task_id"),
    ("counters", "key"),
    ("claims", "key"),
    ("workers", "name"),
    ("fences", "task_id"),
)


#: Columns added to ``messages`` since its first version: name -> definition.
ADDED_COLUMNS = {
    "deliveries": "INTEGER NOT NULL DEFAULT 0",
    "token": "TEXT NOT NULL DEFAULT ''",
}


def add_missing_columns(conn: sqlite3.Connection, tables: Mapping[str, str]) -> None:
    """Give a ``messages`` table made by an older version the columns added since."""
    messages = tables["messages"]
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({messages})")}
    for name, definition in ADDED_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE {messages} ADD COLUMN {name} {definition}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_names(key_prefix: str) -> dict[str, str]:
    """Quoted names of every table and index, each starting with ``key_prefix`` + ``_``."""
    names = [
        "messages",
        "messages_ready",
        "messages_delayed",
        "messages_leased",
        "results",
        "results_expiry",
        "dead",
        "dead_recent",
        "revoked",
        "revoked_expiry",
        "counters",
        "counters_expiry",
        "terminate",
        "terminate_expiry",
        "claims",
        "claims_expiry",
        "fences",
        "fences_expiry",
        "workers",
        "workers_expiry",
        "kept_values",
    ]
    return {name: _quote(f"{key_prefix}_{name}") for name in names}


def delete_expired(conn: sqlite3.Connection, tables: Mapping[str, str], now: float) -> None:
    """Delete a bounded batch of expired rows of each table that has an expiry."""
    for table, key in _EXPIRING:
        name = tables[table]
        conn.execute(
            f"DELETE FROM {name} WHERE {key} IN (SELECT {key} FROM {name} "
            f"WHERE expires_at <= ? LIMIT {_SWEEP_BATCH})",
            (now,),
        )


def back_of_queue(tables: Mapping[str, str]) -> str:
    """SQL for the ``seq`` that puts a message behind every ready one of its queue and
    priority (parameters: queue, priority)."""
    return (
        f"(SELECT COALESCE(MAX(seq), 0) + 1 FROM {tables['messages']} "
        f"WHERE state = {READY} AND queue = ? AND priority = ?)"
    )


def front_of_queue(tables: Mapping[str, str]) -> str:
    """SQL for the ``seq`` that puts a message before every ready one (same parameters)."""
    return (
        f"(SELECT COALESCE(MIN(seq), 0) - 1 FROM {tables['messages']} "
        f"WHERE state = {READY} AND queue = ? AND priority = ?)"
    )


def recover_messages(conn: sqlite3.Connection, tables: Mapping[str, str], now: float) -> None:
    """Move due delayed messages to the back of their queues, and messages whose lease
    ran out to the front, in the order in which they were leased (a batch of each)."""
    m = tables["messages"]
    due = conn.execute(
        f"SELECT id, queue, priority FROM {m} WHERE state = {DELAYED} AND due <= ? "
        f"ORDER BY due LIMIT {_RECOVER_BATCH}",
        (now,),
    ).fetchall()
    back = back_of_queue(tables)
    for message_id, queue, priority in due:
        conn.execute(
            f"UPDATE {m} SET state = {READY}, due = 0, seq = {back} WHERE id = ?",
            (queue, priority, message_id),
        )
    expired = conn.execute(
        f"SELECT id, queue, priority, due, seq FROM {m} WHERE state = {LEASED} "
        f"AND due <= ? ORDER BY due LIMIT {_RECOVER_BATCH}",
        (now,),
    ).fetchall()
    # Each goes in front of the one before: put them back last-leased first.
    expired.sort(key=lambda row: (row[3], row[4]), reverse=True)
    front = front_of_queue(tables)
    for message_id, queue, priority, _due, _seq in expired:
        conn.execute(
            f"UPDATE {m} SET state = {READY}, due = 0, seq = {front} WHERE id = ?",
            (queue, priority, message_id),
        )
