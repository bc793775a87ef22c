"""Enqueue on commit with Flask-SQLAlchemy: the app's tables and the broker on SQLite, on
PostgreSQL (the session's test database), and SQLite tables with a Redis broker."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from redis_server import free_port
from sqlalchemy import create_engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from flask_tasks import (
    ImproperlyConfigured,
    OperationalError,
    Tasks,
    TimeoutError,
    chain,
    group,
    signals,
)
from flask_tasks.runtime import runtime_of
from flask_tasks.testing import drain

tasks = Tasks()
db = SQLAlchemy()
ran: list[object] = []


class Note(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "on_commit_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]


@tasks.task
def read_note(note_id: int) -> object:
    note = db.session.get(Note, note_id)
    ran.append(note_id)
    return note.text if note is not None else None


@tasks.task
def add(x: int, y: int) -> int:
    ran.append((x, y))
    return x + y


def sqlalchemy_url(postgres_url: str) -> str:
    return postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)


def make_app(database_url: str, broker_url: str, **config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        TASKS_BROKER_URL=broker_url,
        TASKS_KEY_PREFIX=f"oncommit-{uuid.uuid4().hex[:8]}",
        **config,
    )
    db.init_app(app)
    tasks.init_app(app)
    return app


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    if request.param == "sqlite":
        made = make_app(f"sqlite:///{tmp_path / 'app.db'}", f"sqlite:///{tmp_path / 'q.db'}")
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        made = make_app(sqlalchemy_url(url), url)
    else:
        url = request.getfixturevalue("redis_url")
        made = make_app(f"sqlite:///{tmp_path / 'app.db'}", url)
    ran.clear()
    with made.app_context():
        db.create_all()
        # Open the broker before a worker thread can: Connections opens it unlocked.
        runtime_of(made).transport.ping()
        yield made
        db.session.rollback()
        db.drop_all()
        close(made)


def close(app: Flask) -> None:
    """Close the app's database engines and broker connections (no ResourceWarnings)."""
    db.session.remove()
    for engine in db.engines.values():
        engine.dispose()
    runtime_of(app).close()


def queued(app: Flask) -> int:
    return runtime_of(app).transport.queue_length("default")


def new_note(text: str = "hello") -> Note:
    note = Note(text=text)
    db.session.add(note)
    db.session.flush()
    return note


def test_commit_sends_once_and_the_task_sees_the_row(app: Flask, threaded_worker) -> None:
    published: list[str] = []

    def count(sender, body, **_kwargs):
        published.append(body["id"])

    threaded_worker(app)
    note = new_note()
    with signals.after_task_publish.connected_to(count):
        result = read_note.delay_on_commit(note.id)
        assert published == [] and not result.exists()
        db.session.commit()
    assert published == [result.id]
    assert result.get(timeout=15) == "hello"
    assert ran == [note.id]


def test_rollback_sends_nothing(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    note = new_note()
    result = read_note.delay_on_commit(note.id)
    with caplog.at_level(logging.INFO, "flask_tasks.on_commit"):
        db.session.rollback()
    assert queued(app) == 0 and not result.exists()
    assert f"read_note[{result.id}]" in caplog.text and "Rolled back" in caplog.text
    db.session.commit()  # nothing is held any more
    drain(app)
    assert ran == [] and queued(app) == 0


def test_closing_without_a_commit_drops_and_warns(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    note = new_note()
    result = read_note.delay_on_commit(note.id)
    with caplog.at_level(logging.WARNING, "flask_tasks.on_commit"):
        db.session.remove()  # what Flask-SQLAlchemy does at the end of the app context
    assert "closed without a commit" in caplog.text and result.id in caplog.text
    assert queued(app) == 0


def test_several_calls_in_one_transaction_publish_in_one_step(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_of(app)
    broker = runtime.connections.broker
    assert broker is not None
    calls: list[int] = []
    real = broker.publish_with_records

    def counting(envelopes, records, ttl):
        calls.append(len(envelopes))
        real(envelopes, records, ttl)

    monkeypatch.setattr(broker, "publish_with_records", counting)
    notes = [new_note(f"n{i}") for i in range(3)]
    results = [read_note.delay_on_commit(note.id) for note in notes]
    results.append(add.s(1, 2).apply_async(on_commit=True))
    assert calls == [] and queued(app) == 0
    db.session.commit()
    assert calls == [4] and queued(app) == 4
    drain(app)
    assert [r.get(timeout=5) for r in results] == ["n0", "n1", "n2", 3]


def test_outside_a_transaction_it_sends_at_once(app: Flask) -> None:
    db.session.commit()
    assert not db.session().in_transaction()
    result = add.delay_on_commit(2, 2)
    assert queued(app) == 1
    drain(app)
    assert result.get(timeout=5) == 4


def test_savepoints_hand_over_to_the_outer_transaction(app: Flask) -> None:
    note = new_note("outer")
    with db.session.begin_nested():
        kept = read_note.delay_on_commit(note.id)
    savepoint = db.session.begin_nested()
    dropped = add.delay_on_commit(1, 1)
    savepoint.rollback()
    assert queued(app) == 0  # a released savepoint is no commit
    db.session.commit()
    assert queued(app) == 1
    drain(app)
    assert kept.get(timeout=5) == "outer" and not dropped.exists()

    new_note()
    with db.session.begin_nested():
        add.delay_on_commit(3, 3)
    db.session.rollback()  # the outer rollback drops what the savepoint handed over
    assert queued(app) == 0


def test_a_plain_sqlalchemy_session(app: Flask, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    with Session(engine) as session:
        session.connection()  # begins a transaction
        result = add.apply_async((5, 5), on_commit=True, session=session)
        assert queued(app) == 0
        session.commit()
    assert queued(app) == 1
    drain(app)
    assert result.get(timeout=5) == 10
    engine.dispose()


def test_workflows_and_send_task_wait_for_the_commit(app: Flask) -> None:
    new_note()
    pipeline = chain(add.s(1, 1), add.s(2)).apply_async(on_commit=True)
    both = group(add.s(1, 0), add.s(2, 0)).apply_async(on_commit=True)
    by_name = tasks.send_task(add.name, (4, 4), on_commit=True)
    unknown = tasks.send_task("not.registered", on_commit=True)
    assert queued(app) == 0
    db.session.commit()
    assert queued(app) == 5
    drain(app)
    assert pipeline.get(timeout=5) == 4 and both.get(timeout=5) == [1, 2]
    assert by_name.get(timeout=5) == 8 and unknown.id


def test_a_failed_publish_after_the_commit_raises(tmp_path: Path) -> None:
    broker = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(f"sqlite:///{tmp_path / 'app.db'}", broker)
    with app.app_context():
        db.create_all()
        note_id = new_note("kept").id
        result = read_note.apply_async((note_id,), on_commit=True, retry=False)
        with pytest.raises(OperationalError, match="The session committed, but sending") as info:
            db.session.commit()
        assert result.id in str(info.value)
        db.session.remove()
        assert db.session.get(Note, note_id).text == "kept"
        close(app)


def test_eager_mode_runs_at_the_commit(tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'app.db'}", "memory://", TASKS_ALWAYS_EAGER=True)
    ran.clear()
    with app.app_context():
        db.create_all()
        note_id = new_note("eager").id
        db.session.commit()
        outside = read_note.delay_on_commit(note_id)  # no transaction: at once
        assert outside.get() == "eager"
        new_note()
        result = add.delay_on_commit(1, 2)
        with pytest.raises(TimeoutError, match="runs when the session commits"):
            result.get()
        db.session.commit()
        assert result.get() == 3 and result.successful()
        new_note()
        dropped = add.delay_on_commit(5, 5)
        db.session.rollback()
        assert dropped.state == "PENDING" and (5, 5) not in ran
        with pytest.raises(TypeError, match="not available for a chain in eager mode"):
            chain(add.s(1, 1), add.s(1)).apply_async(on_commit=True)
        close(app)


def test_errors_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = Flask(__name__)
    app.config.update(TASKS_BROKER_URL="memory://")
    tasks.init_app(app)
    with app.app_context():
        with pytest.raises(ImproperlyConfigured, match="has no Flask-SQLAlchemy.*session="):
            add.delay_on_commit(1, 1)
        with pytest.raises(TypeError, match="session= got str"):
            add.apply_async((1, 1), on_commit=True, session="db")
        with pytest.raises(TypeError, match="goes with on_commit=True"):
            add.apply_async((1, 1), session=object())
        with pytest.raises(TypeError, match="not both"):
            add.apply_async((1, 1), on_commit=True, connection=object())
        with pytest.raises(TypeError, match="a chain takes on_commit=True"):
            chain(add.s(1, 1), add.s(1)).apply_async(connection=object())
        for name in ("sqlalchemy", "sqlalchemy.orm"):
            monkeypatch.setitem(sys.modules, name, None)
        with pytest.raises(ImproperlyConfigured, match=r"needs SQLAlchemy: pip install"):
            add.delay_on_commit(1, 1)
        assert runtime_of(app).transport.queue_length("default") == 0
