"""Periodic tasks: entries, and the Beat loop on every store with a controlled clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask import Flask

from flask_tasks import ImproperlyConfigured, Tasks, signals
from flask_tasks.beat import Beat
from flask_tasks.message import Message
from flask_tasks.schedules import crontab

tasks = Tasks()


@tasks.task(name="beat.ping")
def ping(label="x"):
    return label


T0 = datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=timezone.utc)


def make_app(url: str, **config) -> Flask:
    app = Flask("beat_app")
    app.config.update(TASKS_BROKER_URL=url, SECRET_KEY="beat", **config)
    tasks.init_app(app)
    return app


@pytest.fixture(params=["memory", "sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_client")
        return str(request.getfixturevalue("redis_url"))
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasks.sqlite3'}"
    return "memory://"


@pytest.fixture
def app(url: str) -> Iterator[Flask]:
    app = make_app(
        url,
        TASKS_BEAT_SCHEDULE={
            "every-10s": {"task": "beat.ping", "schedule": 10.0, "args": ["ten"]},
            "hourly": {
                "task": "beat.ping",
                "schedule": crontab(minute=0),
                "kwargs": {"label": "hour"},
                "options": {"queue": "hourly", "priority": 2},
            },
        },
    )
    yield app
    app.extensions["tasks"].close()


def sent(app: Flask, queue: str = "default") -> list[Message]:
    """Take every message of ``queue`` (as a worker would) and decode it."""
    runtime = app.extensions["tasks"]
    messages = []
    while batch := runtime.transport.reserve([queue], 100, 60):
        for delivery in batch:
            messages.append(Message.from_dict(runtime.codec.decode(delivery.body)))
        runtime.transport.ack([delivery.id for delivery in batch])
    return messages


def test_each_due_time_is_sent_once_by_any_number_of_beats(app):
    runtime = app.extensions["tasks"]
    beats = [Beat(runtime) for _ in range(3)]
    for beat in beats:
        beat.start(T0)
    for second in range(0, 61):
        now = T0 + timedelta(seconds=second)
        for beat in beats:
            beat.tick(now)
    messages = sent(app)
    dues = [message.headers["beat_due"] for message in messages]
    assert len(dues) == 6 == len(set(dues))  # 12:00:10 ... 12:01:00, each once
    assert dues[0] == "2026-03-01T12:00:10+00:00"
    assert all(message.args == ["ten"] for message in messages)
    assert sent(app, "hourly") == []  # crontab(minute=0): next due at 13:00, not reached


def test_a_restart_neither_repeats_nor_bursts(app):
    runtime = app.extensions["tasks"]
    first = Beat(runtime)
    first.start(T0)
    first.tick(T0 + timedelta(seconds=10))
    assert len(sent(app)) == 1
    again = Beat(runtime)  # restarted at once: the due time sent is not sent again
    again.start(T0 + timedelta(seconds=11))
    again.tick(T0 + timedelta(seconds=11))
    assert sent(app) == []
    later = Beat(runtime)  # after an hour of downtime: the entry runs once, not 360 times
    later.start(T0 + timedelta(hours=1))
    later.tick(T0 + timedelta(hours=1))
    later.tick(T0 + timedelta(hours=1, seconds=1))
    [late] = sent(app)
    assert late.headers["beat_due"] == "2026-03-01T12:00:20+00:00"  # the first missed time
    assert sent(app, "hourly") == []  # never ran: first due at its next time, 14:00


def test_options_and_the_beat_tick_signal(app):
    ticks: list[list[str]] = []

    def receiver(sender, due):
        ticks.append(due)

    runtime = app.extensions["tasks"]
    beat = Beat(runtime)
    beat.start(T0)
    with signals.beat_tick.connected_to(receiver):
        wait = beat.tick(T0 + timedelta(minutes=60))
    assert ticks == [["every-10s", "hourly"]]
    assert 0 <= wait <= beat.max_interval
    [hourly] = runtime.transport.reserve(["hourly"], 10, 60)
    assert hourly.priority == 2
    message = Message.from_dict(runtime.codec.decode(hourly.body))
    assert message.kwargs == {"label": "hour"} and message.headers["beat_entry"] == "hourly"


def test_schedule_rows_show_last_and_next_run(app):
    runtime = app.extensions["tasks"]
    beat = Beat(runtime)
    beat.start(T0)
    beat.tick(T0 + timedelta(seconds=10))
    rows = {row["name"]: row for row in beat.schedule_rows(T0 + timedelta(seconds=12))}
    assert rows["every-10s"]["last_run"] == "2026-03-01T12:00:10+00:00"
    assert rows["every-10s"]["next_run"] == "2026-03-01T12:00:20+00:00"
    assert rows["hourly"]["last_run"] is None
    assert rows["hourly"]["schedule"] == "crontab(minute='0')"


def test_add_periodic_task_joins_the_config_entries(tmp_path):
    local = Tasks()

    @local.task(name="beat.local")
    def local_task(x):
        return x

    entry = local.add_periodic_task(30, local_task.s(7), name="every-30", queue="q")
    assert entry.options == {"queue": "q"} and entry.args == (7,)
    app = Flask("periodic")
    app.config.update(
        TASKS_BROKER_URL="memory://",
        TASKS_BEAT_SCHEDULE={"other": {"task": "beat.local", "schedule": 5}},
    )
    local.init_app(app)
    names = [e.name for e in app.extensions["tasks"].beat_entries()]
    assert names == ["other", "every-30"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("not a dict", r"TASKS_BEAT_SCHEDULE\['bad'\] must be a dict"),
        ({"schedule": 5}, r"TASKS_BEAT_SCHEDULE\['bad'\] needs 'task'"),
        ({"task": "a.b"}, r"TASKS_BEAT_SCHEDULE\['bad'\] needs 'schedule'"),
        ({"task": "a.b", "schedule": "5 minutes"}, r"\['bad'\]: 'schedule'"),
        ({"task": "a.b", "schedule": -1}, r"\['bad'\]: 'schedule'"),
        ({"task": "a.b", "schedule": 5, "args": 3}, r"'args' must be a list"),
        ({"task": "a.b", "schedule": 5, "when": 1}, r"unknown keys \['when'\]"),
        ({"task": "a.b", "schedule": 5, "options": {"countdown": 3}}, r"\['countdown'\] are not"),
    ],
)
def test_bad_entries_fail_init_app_naming_the_entry(entry, message):
    app = Flask("bad_beat")
    app.config.update(TASKS_BROKER_URL="memory://", TASKS_BEAT_SCHEDULE={"bad": entry})
    with pytest.raises(ImproperlyConfigured, match=message):
        Tasks(app)


def test_periodic_tasks_with_the_same_name_are_refused():
    local = Tasks()
    local.add_periodic_task(5, ping.s(), name="dup")
    local.add_periodic_task(6, ping.s(), name="dup")
    app = Flask("dup")
    app.config.update(TASKS_BROKER_URL="memory://")
    with pytest.raises(ImproperlyConfigured, match="Two periodic tasks are named 'dup'"):
        local.init_app(app)


def test_add_periodic_task_takes_a_task_signature():
    with pytest.raises(TypeError, match="takes a task signature"):
        Tasks().add_periodic_task(5, "beat.ping")
    with pytest.raises(ValueError, match="'schedule'"):
        Tasks().add_periodic_task("often", ping.s())
