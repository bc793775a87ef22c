"""``apply_async(..., connection=...)``: the message written in the caller's PostgreSQL
transaction, with the app's tables and the broker in the session's test database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from sqlalchemy import create_engine
from test_on_commit import Note, add, close, db, make_app, new_note, read_note, sqlalchemy_url

from flask_tasks import ImproperlyConfigured
from flask_tasks.runtime import runtime_of


@pytest.fixture
def app(postgres_url: str) -> Iterator[Flask]:
    made = make_app(sqlalchemy_url(postgres_url), postgres_url)
    with made.app_context():
        db.create_all()
        runtime_of(made).transport.ping()
        yield made
        db.session.rollback()
        db.drop_all()
        close(made)


def queued(app: Flask) -> int:
    return runtime_of(app).transport.queue_length("default")


def test_the_message_exists_exactly_when_the_data_does(app: Flask, threaded_worker) -> None:
    threaded_worker(app)
    note = new_note("same transaction")
    result = read_note.apply_async((note.id,), connection=db.session)
    assert queued(app) == 0 and not result.exists()  # other connections see nothing yet
    db.session.commit()
    assert result.get(timeout=15) == "same transaction"

    note_id = new_note("rolled back").id
    gone = read_note.apply_async((note_id,), connection=db.session)
    db.session.rollback()
    assert queued(app) == 0 and not gone.exists()
    assert db.session.get(Note, note_id) is None


def test_psycopg_and_sqlalchemy_connections(app: Flask, postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        first = add.apply_async((1, 2), connection=connection)
        assert queued(app) == 0
        connection.commit()
    assert queued(app) == 1 and first.exists()
    engine = create_engine(sqlalchemy_url(postgres_url))
    with engine.connect() as connection:
        add.apply_async((3, 4), connection=connection)
        assert queued(app) == 1
        connection.rollback()
        second = add.apply_async((5, 6), connection=connection)
        connection.commit()
    engine.dispose()
    assert queued(app) == 2 and second.exists()
    runtime_of(app).transport.purge("default")


def test_refused_with_a_message(app: Flask, postgres_url: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="takes a psycopg 3 connection.*got builtins.object"):
        add.apply_async((1, 1), connection=object())
    sqlite = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with sqlite.connect() as connection, pytest.raises(TypeError, match="sqlite\\+pysqlite"):
        add.apply_async((1, 1), connection=connection)
    sqlite.dispose()
    other_database = postgres_url.rsplit("/", 1)[0] + "/postgres"
    refused = pytest.raises(ImproperlyConfigured, match="not the broker's")
    with psycopg.connect(other_database) as connection, refused:
        add.apply_async((1, 1), connection=connection)
    assert queued(app) == 0


def test_other_brokers_are_refused(tmp_path: Path, postgres_url: str) -> None:
    other = make_app(f"sqlite:///{tmp_path / 'app.db'}", f"sqlite:///{tmp_path / 'q.db'}")
    with other.app_context(), psycopg.connect(postgres_url) as connection:
        with pytest.raises(ImproperlyConfigured, match="needs the PostgreSQL broker"):
            add.apply_async((1, 1), connection=connection)
        close(other)
