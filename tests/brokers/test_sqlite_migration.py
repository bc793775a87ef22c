"""A SQLite file made before delivery counting gains its columns when opened."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from flask_tasks.brokers import Envelope
from flask_tasks.brokers.sqlite import SQLiteBroker

OLD_MESSAGES = """
CREATE TABLE "old_messages" (
    id TEXT PRIMARY KEY, queue TEXT NOT NULL, priority INTEGER NOT NULL, body BLOB NOT NULL,
    state INTEGER NOT NULL, due REAL NOT NULL, seq INTEGER NOT NULL
);
INSERT INTO "old_messages" VALUES ('waiting', 'q', 5, X'6F6C64', 0, 0, 1);
"""


def test_an_old_file_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(OLD_MESSAGES)
    broker = SQLiteBroker(f"sqlite:///{path}", key_prefix="old")
    try:
        broker.publish([Envelope("new", "q", b"new")])
        taken = broker.reserve(["q"], 5, 30)
        assert [(d.id, d.body, d.deliveries) for d in taken] == [
            ("waiting", b"old", 1),
            ("new", b"new", 1),
        ]
        assert all(d.token for d in taken)
        assert broker.ack(taken) == []
    finally:
        broker.close()
