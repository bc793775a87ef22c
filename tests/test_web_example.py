"""The example app with Flask's test client: pages, configuration, its tasks' outcomes."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app, instance_secret_key
from example_app.extensions import tasks
from example_app.jobs import crunch_numbers, import_contacts, send_reminder
from flask_tasks.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {"SECRET_KEY": "example-test", "TASKS_BROKER_URL": "memory://"}


@pytest.fixture
def example() -> Iterator[Flask]:
    app = create_app({**CONFIG, "EXAMPLE_STEP_SECONDS": 0})
    yield app
    app.extensions["tasks"].close()


def start(client: FlaskClient, **form: str) -> str:
    """Start a job through the form; returns its page's path."""
    response = client.post("/jobs", data=form)
    assert response.status_code == 303
    return str(response.location)


def status_url_on(page: str) -> str:
    match = re.search(r'data-status-url="([^"]+)"', page)
    assert match, page
    return match.group(1)


def test_index_offers_three_jobs(example: Flask) -> None:
    page = example.test_client().get("/").get_data(as_text=True)
    for button in ("start-crunch", "start-import", "start-reminder"):
        assert f'id="{button}"' in page
    assert "No jobs yet" in page
    assert '"flask-tasks": "/tasks/static/flask-tasks.js"' in page  # the import map


def test_start_a_job_and_follow_it(example: Flask) -> None:
    client = example.test_client()
    job_page = start(client, kind="crunch", steps="7")
    assert job_page.startswith("/jobs/")
    page = client.get(job_page).get_data(as_text=True)
    assert "Crunch numbers (7 steps)" in page
    status = client.get(status_url_on(page)).json
    assert status["state"] == "PENDING"
    assert status["id"] == job_page.rsplit("/", 1)[1]
    listing = client.get("/").get_data(as_text=True)
    assert "Crunch numbers (7 steps)" in listing
    assert 'data-kind="crunch"' in listing


def test_jobs_and_links_belong_to_the_browser_that_started_them(example: Flask) -> None:
    owner, stranger = example.test_client(), example.test_client()
    job_page = start(owner, kind="import")
    status_url = status_url_on(owner.get(job_page).get_data(as_text=True))
    assert stranger.get(job_page).status_code == 404
    assert stranger.get(status_url).status_code == 403
    assert stranger.post(status_url + "/revoke", json={}).status_code == 403
    assert owner.get(status_url).status_code == 200


def test_countdown_job_can_be_cancelled(example: Flask) -> None:
    client = example.test_client()
    job_page = start(client, kind="reminder", name="Grace", seconds="30")
    page = client.get(job_page).get_data(as_text=True)
    match = re.search(r'data-starts-in="([\d.]+)"', page)
    assert match
    starts_in = float(match.group(1))
    assert 25 < starts_in <= 30
    revoked = client.post(status_url_on(page) + "/revoke", json={"terminate": True})
    assert (revoked.status_code, revoked.json["state"]) == (202, "REVOKED")


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"kind": "nonsense"}, 400),
        ({"kind": "crunch", "steps": "many"}, 400),
        ({}, 400),
    ],
)
def test_bad_forms_are_400(example: Flask, form: dict[str, str], status: int) -> None:
    assert example.test_client().post("/jobs", data=form).status_code == status


def test_numbers_are_clamped(example: Flask) -> None:
    client = example.test_client()
    page = client.get(start(client, kind="crunch", steps="100000")).get_data(as_text=True)
    assert "Crunch numbers (100 steps)" in page


def test_list_remembers_the_last_jobs_only(example: Flask) -> None:
    client = example.test_client()
    for _ in range(10):
        start(client, kind="import")
    assert client.get("/").get_data(as_text=True).count("<tr data-status-url") == 8


def test_tasks_outcomes() -> None:
    app = create_app({**CONFIG, "EXAMPLE_STEP_SECONDS": 0})
    worker = Worker(app, pool="threads", concurrency=2, loglevel="CRITICAL")
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        with app.app_context():
            assert crunch_numbers.delay(4).get(timeout=10) == {"steps": 4, "sum_of_squares": 30}
            with pytest.raises(ValueError, match="Row 3 has no e-mail address"):
                import_contacts.delay().get(timeout=10)
            assert import_contacts.delay(rows=2).get(timeout=10) == 2
            assert send_reminder.delay("Ada").get(timeout=10) == "Reminder sent to Ada."
    finally:
        worker.stop()
        thread.join(10)
        app.extensions["tasks"].close()


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_TASKS_BROKER_URL", "memory://")
    monkeypatch.setenv("FLASK_SECRET_KEY", "from-env")
    monkeypatch.setenv("FLASK_EXAMPLE_STEP_SECONDS", "0.5")
    app = create_app()
    assert app.extensions["tasks"].connections.broker_url == "memory://"
    assert app.config["SECRET_KEY"] == "from-env"
    assert app.config["EXAMPLE_STEP_SECONDS"] == 0.5


def test_default_broker_is_sqlite_in_the_instance_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLASK_TASKS_BROKER_URL", raising=False)
    app = create_app({"SECRET_KEY": "x"})  # nothing is opened until first use
    expected = "sqlite:///" + str(Path(app.instance_path) / "tasks.sqlite3")
    assert app.extensions["tasks"].connections.broker_url == expected
    assert tasks.runtime(app).config.uses_default_broker


def test_instance_secret_key_is_made_once_and_shared(tmp_path: Path) -> None:
    keys: list[str] = []

    def read(_: Any = None) -> None:
        keys.append(instance_secret_key(str(tmp_path / "instance")))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    assert sorted(path.name for path in (tmp_path / "instance").iterdir()) == ["secret_key"]
    read()
    assert keys[-1] == keys[0]


def test_favicon_and_icon_link(example: Flask) -> None:
    client = example.test_client()
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert b"<svg" in icon.data
    icon.close()
    assert 'rel="icon" href="/static/favicon.svg"' in client.get("/").get_data(as_text=True)


def test_job_list_follows_jobs_with_watch_task() -> None:
    script = (ROOT / "example_app/static/job-list.js").read_text()
    assert 'import { watchTask, TaskFailedError } from "flask-tasks"' in script
    assert "setTimeout" not in script  # no polling loop of its own


def test_the_sqlite_wal_is_checkpointed_when_the_process_exits(tmp_path: Path) -> None:
    """Another process (a worker) keeps the database open, so SQLite would not fold the
    log back by itself: the example app's exit hook does it."""
    import sqlite3
    import subprocess
    import sys

    database = tmp_path / "tasks.sqlite3"
    script = (
        "from example_app import create_app\n"
        "from example_app.jobs import crunch_numbers\n"
        f"app = create_app({{'SECRET_KEY': 'k', 'TASKS_BROKER_URL': 'sqlite:///{database}'}})\n"
        "with app.app_context():\n"
        "    for _ in range(300):\n"
        "        crunch_numbers.delay(5)\n"
    )
    holder = None
    try:
        subprocess.run(
            [sys.executable, "-c", script.replace("range(300)", "range(1)")], check=True, cwd=ROOT
        )
        holder = sqlite3.connect(database)  # like a running worker
        holder.execute("SELECT count(*) FROM sqlite_master").fetchone()
        subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=60)
        wal = Path(f"{database}-wal")
        assert not wal.exists() or wal.stat().st_size == 0, wal.stat().st_size
    finally:
        if holder is not None:
            holder.close()
