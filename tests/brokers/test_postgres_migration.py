"""PostgreSQL tables made by schema 2 (before delivery counting and fencing) gain the new
columns and reserve function the first time this version opens them."""

from __future__ import annotations

import uuid

import psycopg

from flask_tasks.brokers import Envelope
from flask_tasks.brokers.postgres import PostgresBroker
from flask_tasks.brokers.postgres_schema import VERSION

#: What schema 2 made that schema 3 changes: the messages table without ``deliveries``
#: and ``token``, and a reserve function returning six columns.
SCHEMA_2 = """
CREATE TABLE "{p}_messages" (
    id text PRIMARY KEY, queue text NOT NULL, priority smallint NOT NULL,
    body bytea NOT NULL, state smallint NOT NULL, due float8 NOT NULL, seq bigint NOT NULL
);
INSERT INTO "{p}_messages" VALUES ('waiting', 'q', 5, 'old', 0, 0, 1);
CREATE FUNCTION "{p}_reserve"(queues text[], wanted integer, lease float8)
RETURNS TABLE (id text, queue text, priority smallint, body bytea, revoked boolean, seq bigint)
LANGUAGE sql AS 'SELECT NULL::text, NULL::text, NULL::smallint, NULL::bytea, false, 0::bigint
WHERE false';
COMMENT ON TABLE "{p}_messages" IS 'flask-tasks postgresql schema 2';
"""


def test_schema_2_tables_gain_counts_and_tokens(postgres_url: str) -> None:
    prefix = f"old-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(SCHEMA_2.format(p=prefix))
    broker = PostgresBroker(postgres_url, key_prefix=prefix)
    try:
        assert broker.create_schema() is True
        broker.publish([Envelope("new", "q", b"new")])
        taken = broker.reserve(["q"], 5, 30)
        assert [(d.id, d.body, d.deliveries) for d in taken] == [
            ("waiting", b"old", 1),
            ("new", b"new", 1),
        ]
        assert all(d.token for d in taken)
        assert broker.ack(taken) == []
        assert broker.create_schema() is False
    finally:
        broker.close()
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT obj_description(%s::regclass, 'pg_class')", [f'"{prefix}_messages"']
        ).fetchone()
    assert row is not None and row[0] == VERSION
