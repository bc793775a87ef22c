"""The dashboard blueprint and the Prometheus endpoint, through Flask's test client, with
a real worker thread on the memory broker (the browser tests use real processes)."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request
from prometheus_client.parser import text_string_to_metric_families

from flask_tasks import ImproperlyConfigured, Tasks
from flask_tasks.brokers import Delivery
from flask_tasks.testing import start_worker
from flask_tasks.web.chart import throughput_chart
from flask_tasks.web.overview import per_minute
from flask_tasks.worker.stats import BUCKETS, MINUTES, TaskStats

ADMIN = {"X-Admin": "yes"}
ACTION = {"X-Requested-With": "test"}
WAIT = 15.0


def make_app(**config: Any) -> tuple[Flask, Tasks]:
    app = Flask("dashboard_app")
    app.config.update(
        SECRET_KEY="k",
        TASKS_BROKER_URL="memory://",
        TASKS_DASHBOARD=True,
        TASKS_METRICS=True,
        TASKS_DASHBOARD_AUTHORIZE=lambda: request.headers.get("X-Admin") == "yes",
    )
    app.config.update(config)
    tasks = Tasks(app)

    @tasks.task(name="test_dashboard.add")
    def add(a: int, b: int) -> int:
        return a + b

    @tasks.task(name="test_dashboard.broken")
    def broken() -> None:
        raise ValueError("row 3 has no e-mail address")

    return app, tasks


def wait_for(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture
def busy_app() -> Iterator[Flask]:
    """An app whose worker thread ran 3 additions and 1 failure, and has told the store."""
    app, tasks = make_app()
    worker, thread = start_worker(app)
    try:
        with app.app_context():
            results = [tasks.registry["test_dashboard.add"].delay(i, i) for i in range(3)]
            failed = tasks.registry["test_dashboard.broken"].delay()
            for result in results:
                result.get(timeout=WAIT)
            with pytest.raises(ValueError):
                failed.get(timeout=WAIT)
            store = app.extensions["tasks"].store

            def counted() -> bool:
                infos = [json.loads(raw) for raw in store.workers().values()]
                totals = [info.get("stats", {}).get("totals", {}) for info in infos]
                return any(t.get("test_dashboard.broken", {}).get("FAILURE") for t in totals)

            wait_for(counted, "the heartbeat with the counts")
        yield app
    finally:
        worker.stop()
        thread.join(WAIT)


def dead_letter(app: Flask, tasks: Tasks, message_id: str = "letter-1") -> None:
    """Park a real message in the dead letters (as a worker would, with a reason)."""
    with app.app_context():
        tasks.registry["test_dashboard.add"].apply_async((1, 2), queue="parked", task_id=message_id)
        transport = app.extensions["tasks"].transport
        [delivery] = transport.reserve(["parked"], 1, 60)
        transport.dead_letter(
            Delivery(delivery.id, "default", delivery.priority, delivery.body), "test: parked"
        )


# -- access --------------------------------------------------------------------------------


def test_off_by_default() -> None:
    app, _ = make_app(TASKS_DASHBOARD=False, TASKS_METRICS=False)
    client = app.test_client()
    assert client.get("/tasks/dashboard/", headers=ADMIN).status_code == 404
    assert client.get("/tasks/dashboard/metrics", headers=ADMIN).status_code == 404
    assert "flask_tasks_dashboard" not in app.blueprints


def test_metrics_alone_keeps_the_page_off() -> None:
    app, _ = make_app(TASKS_DASHBOARD=False)
    client = app.test_client()
    assert client.get("/tasks/dashboard/", headers=ADMIN).status_code == 404
    assert client.get("/tasks/dashboard/metrics", headers=ADMIN).status_code == 200


def test_without_an_authorize_callable_everyone_is_refused() -> None:
    app, _ = make_app(TASKS_DASHBOARD_AUTHORIZE=None)
    client = app.test_client()
    for path in ("/tasks/dashboard/", "/tasks/dashboard/metrics"):
        response = client.get(path, headers=ADMIN)
        assert response.status_code == 403
        assert "TASKS_DASHBOARD_AUTHORIZE" in response.get_json()["message"]


def test_the_authorize_callable_decides() -> None:
    app, _ = make_app()
    client = app.test_client()
    assert client.get("/tasks/dashboard/").status_code == 403
    assert client.get("/tasks/dashboard/metrics").status_code == 403
    assert client.post("/tasks/dashboard/dead-letters/retry", json={"id": "x"}).status_code == 403
    assert client.get("/tasks/dashboard/", headers=ADMIN).status_code == 200


def test_a_custom_prefix() -> None:
    app, _ = make_app(TASKS_DASHBOARD_URL_PREFIX="/admin/jobs")
    assert app.test_client().get("/admin/jobs/", headers=ADMIN).status_code == 200


def test_a_bad_authorize_setting_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="TASKS_DASHBOARD_AUTHORIZE must be a callable"):
        make_app(TASKS_DASHBOARD_AUTHORIZE=True)


def test_metrics_without_prometheus_client_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'Flask-Tasks\[metrics\]'"):
        make_app()


# -- the page --------------------------------------------------------------------------------


def test_the_page_shows_queues_workers_failures_and_the_chart(busy_app: Flask) -> None:
    page = busy_app.test_client().get("/tasks/dashboard/", headers=ADMIN)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    assert 'data-queue="default"' in html
    assert 'class="worker"' in html and "threads" in html
    assert "ValueError: row 3 has no e-mail address" in html
    assert '<svg class="chart"' in html and "3 succeeded, 1 failed" in html
    assert 'id="hour-succeeded">3<' in html and 'id="hour-failed">1<' in html


def test_an_unreachable_broker_gives_503_with_the_reason() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app, _ = make_app(TASKS_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    response = app.test_client().get("/tasks/dashboard/", headers=ADMIN)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert f"127.0.0.1:{port}" in response.get_json()["message"]


# -- dead-letter actions ---------------------------------------------------------------------


def test_retry_puts_a_dead_letter_back_in_its_queue() -> None:
    app, tasks = make_app()
    dead_letter(app, tasks)
    client = app.test_client()
    html = client.get("/tasks/dashboard/", headers=ADMIN).get_data(as_text=True)
    assert 'data-letter="letter-1"' in html and "test_dashboard.add" in html
    response = client.post(
        "/tasks/dashboard/dead-letters/retry", json={"id": "letter-1"}, headers=ADMIN
    )
    assert response.status_code == 200 and response.get_json()["retried"] is True
    transport = app.extensions["tasks"].transport
    assert transport.dead_letters() == []
    assert transport.queue_length("default") == 1
    again = client.post(
        "/tasks/dashboard/dead-letters/retry", json={"id": "letter-1"}, headers=ADMIN
    )
    assert again.status_code == 404 and "retried or deleted already" in again.get_json()["message"]


def test_delete_drops_a_dead_letter() -> None:
    app, tasks = make_app()
    dead_letter(app, tasks)
    client = app.test_client()
    response = client.post(
        "/tasks/dashboard/dead-letters/delete", json={"id": "letter-1"}, headers=ADMIN
    )
    assert response.status_code == 200 and response.get_json()["deleted"] is True
    assert app.extensions["tasks"].transport.dead_letters() == []
    assert app.extensions["tasks"].transport.queue_length("default") == 0


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "id=letter-1", "content_type": "application/x-www-form-urlencoded"}, 403, "csrf"),
        ({"json": {"id": "letter-1"}, "headers": {"Sec-Fetch-Site": "cross-site"}}, 403, "csrf"),
        ({"json": {"nope": 1}}, 400, "bad_request"),
        ({"json": ["letter-1"]}, 400, "bad_request"),
        ({"data": "x", "headers": ACTION}, 400, "bad_request"),
    ],
)
def test_actions_refuse_cross_site_and_malformed_requests(kwargs, status, code) -> None:
    app, tasks = make_app()
    dead_letter(app, tasks)
    headers = {**ADMIN, **kwargs.pop("headers", {})}
    response = app.test_client().post(
        "/tasks/dashboard/dead-letters/delete", headers=headers, **kwargs
    )
    assert (response.status_code, response.get_json()["error"]) == (status, code)
    assert len(app.extensions["tasks"].transport.dead_letters()) == 1


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_parse_and_count_what_the_worker_did(busy_app: Flask) -> None:
    response = busy_app.test_client().get("/tasks/dashboard/metrics", headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        matches = [
            v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()
        ]
        assert len(matches) == 1, (name, labels, matches)
        return matches[0]

    assert value("flask_tasks_queue_ready", queue="default") == 0
    assert value("flask_tasks_queue_consumers", queue="default") == 1
    assert value("flask_tasks_worker_up", pool="threads") == 1
    assert value("flask_tasks_worker_running_tasks") == 0
    assert value("flask_tasks_tasks_total", task="test_dashboard.add", state="SUCCESS") == 3
    assert value("flask_tasks_tasks_total", task="test_dashboard.broken", state="FAILURE") == 1
    assert families["flask_tasks_task_runtime_seconds"].type == "histogram"
    assert value("flask_tasks_task_runtime_seconds_count", task="test_dashboard.add") == 3
    assert (
        value("flask_tasks_task_runtime_seconds_bucket", task="test_dashboard.add", le="+Inf") == 3
    )
    assert value("flask_tasks_task_runtime_seconds_sum", task="test_dashboard.add") >= 0


# -- the figures behind them -----------------------------------------------------------------


def test_task_stats_count_buckets_and_minutes() -> None:
    stats = TaskStats()
    stats.record("t", "SUCCESS", 0.003)
    stats.record("t", "SUCCESS", 1000.0)
    stats.record("t", "FAILURE", 0.2, "id-1", "ValueError: x")
    stats.record("t", "RETRY", 0.1)
    stats.record("t", "REVOKED", None)
    snapshot = stats.snapshot()
    assert snapshot["totals"] == {"t": {"SUCCESS": 2, "FAILURE": 1, "RETRY": 1, "REVOKED": 1}}
    histogram = snapshot["runtime"]["t"]
    assert len(histogram) == len(BUCKETS) + 2
    assert histogram[0] == 1 and histogram[len(BUCKETS)] == 1  # 3 ms, and past the last bound
    assert sum(histogram[:-1]) == 4 and histogram[-1] == pytest.approx(1000.303)
    [[_minute, succeeded, failed, seconds]] = snapshot["minutes"]  # retries are not done yet
    assert (succeeded, failed) == (2, 2) and seconds == pytest.approx(1000.203)
    assert snapshot["failures"][0]["error"] == "ValueError: x"


def test_per_minute_sums_workers_over_the_last_hour() -> None:
    now = 60 * 1000 + 30
    infos = {
        "a:1": {"stats": {"minutes": [[1000, 2, 0, 1.0], [1000 - MINUTES, 9, 9, 9.0]]}},
        "b:2": {"stats": {"minutes": [[1000, 1, 1, 2.0], [999, 1, 0, 0.5]]}},
        "c:3": {},
    }
    minutes = per_minute(infos, now)
    assert len(minutes) == MINUTES and minutes[-1]["minute"] == 1000
    assert minutes[-1] == {"minute": 1000, "succeeded": 3, "failed": 1, "mean_seconds": 0.75}
    assert minutes[-2]["succeeded"] == 1 and minutes[0]["succeeded"] == 0
    assert minutes[0]["mean_seconds"] is None
    svg = str(throughput_chart(minutes))
    assert svg.startswith("<svg") and "3 succeeded, 1 failed, mean 750 ms" in svg
    assert svg.count("<circle") == 2  # one point per minute with a mean


def test_heartbeat_age_is_judged_by_the_stores_clock(monkeypatch) -> None:
    """A worker stamps its heartbeat by the store's clock; a web host whose own clock is an
    hour behind still reports the heartbeat as seconds old, not clamped to 0."""
    app, _ = make_app()
    with app.app_context():
        store = app.extensions["tasks"].store
        monkeypatch.setattr(store, "server_time", lambda: time.time() + 3600.0)
        info = {"hostname": "elsewhere", "pool": "solo", "queues": ["default"]}
        store.heartbeat(
            "elsewhere:1", json.dumps({**info, "at": time.time() + 3593.0}).encode(), 60
        )
    response = app.test_client().get("/tasks/dashboard/metrics", headers=ADMIN)
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    [sample] = families["flask_tasks_worker_heartbeat_age_seconds"].samples
    assert 6.0 <= sample.value <= 9.0, sample
