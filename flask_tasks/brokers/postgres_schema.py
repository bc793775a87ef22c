"""The PostgreSQL broker's schema: tables, indexes, sequences and the reserve function.

Every name starts with the key prefix and an underscore (``flask_tasks_messages``...), so
several apps share one database. :func:`create_schema` makes whatever is missing, under an
advisory lock so that processes starting together do not race; it is cheap when the
schema is already there (one catalogue lookup).

Times are Unix seconds (``float8``) read from the database's clock (:data:`NOW`), never
from a client's: leases and expiries mean the same to every host.
"""

from __future__ import annotations

import re
from typing import Any

from ..exceptions import ImproperlyConfigured

#: Message states (the ``state`` column).
READY, DELAYED, LEASED = 0, 1, 2

#: A message's ``seq`` is ``block * SEQ_BLOCK + position``: one sequence value per
#: statement orders a whole batch (``nextval`` once per row would not be ordered).
SEQ_BLOCK = 1 << 20
#: Most delayed (and, separately, expired) messages one ``reserve`` moves back to queues.
RECOVER_BATCH = 500
#: Most expired rows of each kind one housekeeping pass deletes.
SWEEP_BATCH = 500

#: The database's clock as Unix time; ``now()`` is the start of the statement's
#: transaction, so one statement sees one instant.
NOW = "extract(epoch FROM now())::float8"

#: Bumped whenever the schema changes; stored as the messages table's comment.
VERSION = "flask-tasks postgresql schema 4"

#: PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes).
_MAX_NAME = 63

_NAMES = (
    "messages",
    "messages_ready",
    "messages_delayed",
    "messages_leased",
    "back",
    "front",
    "reserve",
    "results",
    "results_expiry",
    "dead",
    "dead_recent",
    "revoked",
    "revoked_expiry",
    "counters",
    "counters_expiry",
    "claims",
    "claims_expiry",
    "fences",
    "fences_expiry",
    "workers",
    "workers_expiry",
    "kept_values",
)
#: Tables whose rows expire.
_EXPIRING = ("results", "revoked", "counters", "claims", "workers", "fences")
_BAD_PREFIX = re.compile(r"[\"'\\\x00-\x1f]")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {messages} (
    id text PRIMARY KEY,
    queue text NOT NULL,
    priority smallint NOT NULL,
    body bytea NOT NULL,
    state smallint NOT NULL,
    due float8 NOT NULL,
    seq bigint NOT NULL,
    deliveries integer NOT NULL DEFAULT 0,
    token text NOT NULL DEFAULT ''
);
-- Schema 3 counts deliveries and fences leases; older tables gain the columns.
ALTER TABLE {messages} ADD COLUMN IF NOT EXISTS deliveries integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS token text NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS {messages_ready} ON {messages} (queue, priority, seq)
    WHERE state = 0;
CREATE INDEX IF NOT EXISTS {messages_delayed} ON {messages} (due) WHERE state = 1;
CREATE INDEX IF NOT EXISTS {messages_leased} ON {messages} (due) WHERE state = 2;
CREATE SEQUENCE IF NOT EXISTS {back} AS bigint MINVALUE 1 MAXVALUE 8796093022207;
CREATE SEQUENCE IF NOT EXISTS {front} AS bigint INCREMENT BY -1
    MINVALUE -8796093022207 MAXVALUE -1 START WITH -1;
CREATE TABLE IF NOT EXISTS {results} (
    task_id text PRIMARY KEY,
    record bytea NOT NULL,
    expires_at float8
);
CREATE INDEX IF NOT EXISTS {results_expiry} ON {results} (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {dead} (
    id text PRIMARY KEY,
    queue text NOT NULL,
    priority smallint NOT NULL,
    body bytea NOT NULL,
    reason text NOT NULL,
    failed_at float8 NOT NULL,
    n bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS {dead_recent} ON {dead} (failed_at, n);
CREATE TABLE IF NOT EXISTS {revoked} (
    task_id text PRIMARY KEY,
    expires_at float8 NOT NULL,
    terminate_until float8
);
CREATE INDEX IF NOT EXISTS {revoked_expiry} ON {revoked} (expires_at);
CREATE TABLE IF NOT EXISTS {counters} (
    key text PRIMARY KEY,
    value bigint NOT NULL,
    expires_at float8 NOT NULL
);
CREATE INDEX IF NOT EXISTS {counters_expiry} ON {counters} (expires_at);
CREATE TABLE IF NOT EXISTS {claims} (key text PRIMARY KEY, expires_at float8 NOT NULL);
CREATE INDEX IF NOT EXISTS {claims_expiry} ON {claims} (expires_at);
CREATE TABLE IF NOT EXISTS {fences} (task_id text PRIMARY KEY, token text NOT NULL,
    expires_at float8);
CREATE INDEX IF NOT EXISTS {fences_expiry} ON {fences} (expires_at);
CREATE TABLE IF NOT EXISTS {workers} (
    name text PRIMARY KEY,
    info bytea NOT NULL,
    expires_at float8 NOT NULL
);
CREATE INDEX IF NOT EXISTS {workers_expiry} ON {workers} (expires_at);
CREATE TABLE IF NOT EXISTS {kept_values} (
    namespace text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- reserve(queues, wanted, lease): move due delayed messages to the back of their queues
-- and expired leases to the front (a batch each), then lease up to `wanted` ready
-- messages, queue by queue in the order given, each counted and under a fresh token
-- (random() and the clock: gen_random_uuid() needs PostgreSQL 13). One call, one
-- transaction; each statement sees the ones before it, which one SQL statement's
-- snapshot would not. Schema 2's function returned fewer columns: a function's result
-- type cannot be replaced, only dropped.
DROP FUNCTION IF EXISTS {reserve}(text[], integer, float8);
CREATE FUNCTION {reserve}(queues text[], wanted integer, lease float8)
RETURNS TABLE (id text, queue text, priority smallint, body bytea, revoked boolean, seq bigint,
               deliveries integer, token text)
LANGUAGE plpgsql AS $reserve$
#variable_conflict use_column
DECLARE
    now_e float8 := extract(epoch FROM now())::float8;
    block bigint;
    queue_name text;
    taken integer := 0;
    found_rows integer;
BEGIN
    IF EXISTS (SELECT 1 FROM {messages} AS x WHERE x.state = 1 AND x.due <= now_e) THEN
        block := nextval('{back}');
        UPDATE {messages} AS m SET state = 0, due = 0, seq = block * {seq_block} + d.pos
        FROM (SELECT l.id, row_number() OVER (ORDER BY l.due, l.seq) AS pos
              FROM (SELECT x.id, x.due, x.seq FROM {messages} AS x
                    WHERE x.state = 1 AND x.due <= now_e ORDER BY x.due
                    LIMIT {batch} FOR UPDATE SKIP LOCKED) AS l) AS d
        WHERE m.id = d.id;
    END IF;
    IF EXISTS (SELECT 1 FROM {messages} AS x WHERE x.state = 2 AND x.due <= now_e) THEN
        -- A decreasing sequence: each batch goes in front of the last, and within a
        -- batch the first leased goes first.
        block := nextval('{front}');
        UPDATE {messages} AS m SET state = 0, due = 0, seq = block * {seq_block} + d.pos
        FROM (SELECT l.id, row_number() OVER (ORDER BY l.due, l.seq) AS pos
              FROM (SELECT x.id, x.due, x.seq FROM {messages} AS x
                    WHERE x.state = 2 AND x.due <= now_e ORDER BY x.due
                    LIMIT {batch} FOR UPDATE SKIP LOCKED) AS l) AS d
        WHERE m.id = d.id;
    END IF;
    FOREACH queue_name IN ARRAY queues LOOP
        EXIT WHEN taken >= wanted;
        RETURN QUERY
            UPDATE {messages} AS m SET state = 2, due = now_e + lease,
                deliveries = m.deliveries + 1,
                token = md5(random()::text || clock_timestamp()::text || m.id)
            FROM (SELECT x.id FROM {messages} AS x
                  WHERE x.state = 0 AND x.queue = queue_name
                  ORDER BY x.priority, x.seq
                  LIMIT wanted - taken FOR UPDATE SKIP LOCKED) AS p
            WHERE m.id = p.id
            RETURNING m.id, m.queue, m.priority, m.body,
                EXISTS (SELECT 1 FROM {revoked} AS r
                        WHERE r.task_id = m.id AND r.expires_at > now_e),
                m.seq, m.deliveries, m.token;
        GET DIAGNOSTICS found_rows = ROW_COUNT;
        taken := taken + found_rows;
    END LOOP;
END
$reserve$;
COMMENT ON TABLE {messages} IS '{version}';
"""


def _quote(name: str) -> str:
    return '"' + name + '"'


def table_names(key_prefix: str) -> dict[str, str]:
    """Quoted names of every table, index, sequence and function, each starting with
    ``key_prefix`` + ``_``; ImproperlyConfigured for a prefix PostgreSQL cannot use."""
    if not key_prefix or _BAD_PREFIX.search(key_prefix):
        raise ImproperlyConfigured(
            f"TASKS_KEY_PREFIX {key_prefix!r} cannot name PostgreSQL tables: use a "
            "non-empty prefix without quotes, backslashes or control characters"
        )
    longest = max(len(f"{key_prefix}_{name}".encode()) for name in _NAMES)
    if longest > _MAX_NAME:
        spare = _MAX_NAME - (longest - len(key_prefix.encode()))
        raise ImproperlyConfigured(
            f"TASKS_KEY_PREFIX {key_prefix!r} is too long for PostgreSQL, whose names hold "
            f"{_MAX_NAME} bytes: use a prefix of at most {spare} bytes"
        )
    return {name: _quote(f"{key_prefix}_{name}") for name in _NAMES}


def channel_names(key_prefix: str) -> dict[str, str]:
    """The ``LISTEN``/``NOTIFY`` channels: ``work`` (payload: a queue name) and
    ``results`` (payload: a task id)."""
    return {name: f"{key_prefix}_{name}" for name in ("work", "results")}


def schema_sql(tables: dict[str, str]) -> str:
    """Every ``CREATE`` statement, idempotent, as one script."""
    return _SCHEMA.format(
        **tables, seq_block=SEQ_BLOCK, batch=RECOVER_BATCH, version=VERSION
    ).strip()


def sweep_sql(tables: dict[str, str]) -> str:
    """Statements deleting a bounded batch of expired rows of each expiring table."""
    return ";\n".join(
        f"DELETE FROM {tables[table]} WHERE ctid = ANY(ARRAY(SELECT ctid FROM "
        f"{tables[table]} WHERE expires_at <= {NOW} LIMIT {SWEEP_BATCH}))"
        for table in _EXPIRING
    )


def create_schema(connection: Any, tables: dict[str, str]) -> bool:
    """Create what is missing of the schema (``connection``: a psycopg connection in
    autocommit mode). Returns False when it was already complete."""
    if _is_current(connection, tables):
        return False
    with connection.transaction():
        # Concurrent CREATE ... IF NOT EXISTS of one name can fail: take turns, and look
        # again once it is our turn (running the DDL again while another process already
        # uses the tables would lock against it).
        connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [tables["messages"]])
        if _is_current(connection, tables):
            return False
        connection.execute(schema_sql(tables))
    return True


def _is_current(connection: Any, tables: dict[str, str]) -> bool:
    # Read pg_class through SQL rather than to_regclass(): scanning it takes a lock, which
    # makes this backend process the catalogue changes another one has just committed
    # (the advisory lock does not, and a stale cache would run the DDL a second time).
    current = connection.execute(
        "SELECT d.description FROM pg_catalog.pg_class AS c "
        "JOIN pg_catalog.pg_description AS d "
        "ON d.objoid = c.oid AND d.classoid = 'pg_catalog.pg_class'::regclass "
        "AND d.objsubid = 0 "
        "WHERE c.relname = %s AND c.relnamespace = to_regnamespace(current_schema())",
        [tables["messages"].strip('"')],
    ).fetchone()
    return current is not None and current[0] == VERSION
