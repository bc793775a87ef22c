"""The dashboard in headless Chromium, with live data from a real ``flask worker``.

The web server and the worker run ``tests/apps/dashboard_app.py`` as subprocesses on a
shared SQLite broker; screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from test_browser import WAIT, answers, browser, free_port, screenshot, wait_for  # noqa: F401

from flask_tasks import Tasks
from flask_tasks.brokers import Delivery

pytestmark = pytest.mark.browser

TESTS = Path(__file__).resolve().parent
COOKIE = {"name": "dashboard-admin", "value": "let-me-in"}


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess_popen(args, env, output)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(WAIT)


def subprocess_popen(args: list[str], env: dict[str, str], output: Any) -> Any:
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "apps.dashboard_app", *args],
        cwd=TESTS,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("dashboard")
    broker = f"sqlite:///{folder / 'tasks.sqlite3'}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLASK_")}
    env.update(
        FLASK_TASKS_BROKER_URL=broker, FLASK_SECRET_KEY="dashboard-key", PYTHONUNBUFFERED="1"
    )
    port = free_port()
    worker = Process(["worker", "-P", "threads", "-c", "2"], env, folder / "worker.log")
    server = Process(["run", "--port", str(port)], env, folder / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: (
                answers(base + "/tasks/static/dashboard.js") or server.process.poll() is not None
            ),
            "the server",
        )
        assert server.process.poll() is None, server.output()
        sys.path.insert(0, str(TESTS))
        from apps import dashboard_app

        app = Flask("dashboard_client")
        app.config.update(TASKS_BROKER_URL=broker, SECRET_KEY="dashboard-key")
        client = Tasks(app)
        assert "dash.add" in dashboard_app.tasks.registry  # sent by name from here
        yield {"base": base, "app": app, "tasks": client}
    finally:
        server.stop()
        worker.stop()
    assert "Traceback" not in server.output(), server.output()


def send(site: dict[str, Any], name: str, *args: Any, **options: Any) -> Any:
    with site["app"].app_context():
        return site["tasks"].send_task(name, args, **options)


def get(result: Any, site: dict[str, Any], propagate: bool = True) -> Any:
    with site["app"].app_context():
        return result.get(timeout=WAIT, propagate=propagate)


def open_dashboard(browser: Any, base: str) -> None:  # noqa: F811
    browser.get(base + "/tasks/static/dashboard.css")  # a page of the site, to set the cookie
    browser.add_cookie(COOKIE)
    browser.get(base + "/tasks/dashboard/")


def test_an_unauthorized_request_gets_403(site: dict[str, Any], browser: Any) -> None:  # noqa: F811
    browser.delete_all_cookies()
    browser.get(site["base"] + "/tasks/dashboard/")
    assert "You may not see the task dashboard" in browser.page_source
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(site["base"] + "/tasks/dashboard/metrics", timeout=WAIT)
    refused.value.close()
    assert refused.value.code == 403


def test_the_dashboard_shows_live_data_and_retries_a_dead_letter(
    site: dict[str, Any],
    browser: Any,  # noqa: F811
) -> None:
    for number in range(6):
        get(send(site, "dash.add", number, number), site)
    with pytest.raises(ValueError):
        get(send(site, "dash.broken", 3), site)
    running = send(site, "dash.slow", 8.0)
    # A dead letter with a real message in it, as a worker leaves one.
    parked = send(site, "dash.add", 20, 22, queue="parked")
    with site["app"].app_context():
        transport = site["app"].extensions["tasks"].transport
        [delivery] = transport.reserve(["parked"], 1, 60)
        transport.dead_letter(
            Delivery(delivery.id, "default", delivery.priority, delivery.body), "test: parked"
        )
    open_dashboard(browser, site["base"])

    def shows_everything() -> bool:
        source = browser.page_source
        return (
            "dash.slow" in source  # a running task, from the worker's heartbeat
            and "ValueError: row 3 has no e-mail address" in source
            and parked.id in source
        )

    wait_for(shows_everything, "the dashboard to show the running task, failure and letter")
    assert browser.find_element("id", "hour-succeeded").text == "6"
    assert browser.find_element("id", "hour-failed").text == "1"
    assert browser.find_element("id", "worker-count").text == "1"
    schedule = browser.find_element("id", "schedule").text
    assert "nightly-report" in schedule and "dash.add" in schedule
    assert browser.find_elements("css selector", "svg.chart rect.ok")
    screenshot(browser, "dashboard")

    row = browser.find_element("css selector", f'tr[data-letter="{parked.id}"]')
    row.find_element("xpath", ".//button[text()='Retry']").click()
    wait_for(
        lambda: f"Retried {parked.id}" in browser.find_element("id", "message").text,
        "the retry to be confirmed",
    )
    assert get(parked, site) == 42  # the worker ran it from the default queue
    wait_for(lambda: parked.id not in browser.find_element("id", "dead-letters").text, "refresh")
    assert get(running, site) == 8.0
    screenshot(browser, "dashboard-after-retry")


def test_delete_asks_first_and_drops_the_letter(
    site: dict[str, Any],
    browser: Any,  # noqa: F811
) -> None:
    parked = send(site, "dash.add", 1, 1, queue="parked")
    with site["app"].app_context():
        transport = site["app"].extensions["tasks"].transport
        [delivery] = transport.reserve(["parked"], 1, 60)
        transport.dead_letter(delivery, "test: to delete")
    open_dashboard(browser, site["base"])
    row = browser.find_element("css selector", f'tr[data-letter="{parked.id}"]')
    browser.execute_script("window.confirm = () => true;")
    row.find_element("xpath", ".//button[text()='Delete']").click()
    wait_for(
        lambda: f"Deleted {parked.id}" in browser.find_element("id", "message").text, "deletion"
    )
    with site["app"].app_context():
        assert parked.id not in [letter.id for letter in transport.dead_letters()]


def test_metrics_are_scraped_and_parsed(site: dict[str, Any]) -> None:
    get(send(site, "dash.add", 2, 2), site)
    request = urllib.request.Request(
        site["base"] + "/tasks/dashboard/metrics",
        headers={"Cookie": f"{COOKIE['name']}={COOKIE['value']}"},
    )

    def scrape() -> dict[str, Any]:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            text = response.read().decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    families = wait_for(
        lambda: (
            (f := scrape())
            and any(s.labels.get("task") == "dash.add" for s in f["flask_tasks_tasks"].samples)
            and f
        ),
        "the worker's counts in the metrics",
    )
    assert families["flask_tasks_task_runtime_seconds"].type == "histogram"
    assert [s.value for s in families["flask_tasks_worker_up"].samples] == [1.0]
    ready = {s.labels["queue"]: s.value for s in families["flask_tasks_queue_ready"].samples}
    assert "default" in ready
