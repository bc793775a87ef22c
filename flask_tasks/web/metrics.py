"""The Prometheus endpoint: queue depth, task counts by state, run-time histograms and
worker liveness, collected afresh on every scrape (needs the ``metrics`` extra).

Task counts and histograms come from each live worker process's heartbeat, labelled
with the process (``worker="host:pid"``): they start from zero when a worker restarts,
which Prometheus' ``rate()`` and ``increase()`` treat as a counter reset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..cli_control import store_now
from ..exceptions import ImproperlyConfigured
from ..worker.stats import BUCKETS
from .overview import heartbeats, queue_rows

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - checked by require_prometheus
    Collector = object  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..runtime import Runtime


def require_prometheus() -> None:
    """Raise ImproperlyConfigured, naming the extra, when prometheus-client is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ImproperlyConfigured(
            "TASKS_METRICS needs prometheus-client: pip install 'Flask-Tasks[metrics]'"
        ) from None


def exposition(runtime: Runtime) -> tuple[bytes, str]:
    """The metrics of ``runtime``'s app in Prometheus' text format, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TasksCollector(runtime))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class TasksCollector(Collector):
    """Reads the transport and store once per scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        infos = heartbeats(self.runtime)
        workers = [{"queues": info.get("queues") or []} for info in infos.values()]
        yield from _queue_metrics(queue_rows(self.runtime, workers))
        yield from _worker_metrics(infos, store_now(self.runtime))
        yield from _task_metrics(infos)


def _queue_metrics(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    families = {
        key: GaugeMetricFamily(
            f"flask_tasks_queue_{key}", f"Messages {key} in the queue", labels=["queue"]
        )
        for key in ("ready", "delayed", "reserved")
    }
    consumers = GaugeMetricFamily(
        "flask_tasks_queue_consumers", "Live worker processes consuming the queue", labels=["queue"]
    )
    for row in rows:
        for key, family in families.items():
            if row[key] is not None:  # the transport cannot tell: no sample
                family.add_metric([row["name"]], row[key])
        consumers.add_metric([row["name"]], row["consumers"])
    yield from families.values()
    yield consumers


def _worker_metrics(infos: dict[str, dict[str, Any]], now: float) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "flask_tasks_worker_up",
        "1 for each worker process whose heartbeat has not expired",
        labels=["worker", "hostname", "pool"],
    )
    age = GaugeMetricFamily(
        "flask_tasks_worker_heartbeat_age_seconds",
        "Seconds since the worker process's last heartbeat",
        labels=["worker"],
    )
    running = GaugeMetricFamily(
        "flask_tasks_worker_running_tasks", "Tasks running in the worker process", labels=["worker"]
    )
    for name, info in sorted(infos.items()):
        up.add_metric([name, str(info.get("hostname") or ""), str(info.get("pool") or "")], 1)
        age.add_metric([name], max(0.0, now - float(info.get("at") or now)))
        running.add_metric([name], len(info.get("running") or []))
    yield from (up, age, running)


def _task_metrics(infos: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    counts = CounterMetricFamily(
        "flask_tasks_tasks",
        "Tasks finished by the worker process, by task and final state",
        labels=["worker", "task", "state"],
    )
    runtimes = HistogramMetricFamily(
        "flask_tasks_task_runtime_seconds",
        "Run time of tasks in the worker process",
        labels=["worker", "task"],
    )
    for name, info in sorted(infos.items()):
        stats = info.get("stats") or {}
        for task, by_state in sorted((stats.get("totals") or {}).items()):
            for state, count in sorted(by_state.items()):
                counts.add_metric([name, task, state], count)
        for task, values in sorted((stats.get("runtime") or {}).items()):
            if len(values) != len(BUCKETS) + 2:
                continue  # a worker of another version
            cumulative, buckets = 0.0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], values[:-1]):
                cumulative += count
                buckets.append((bound, cumulative))
            runtimes.add_metric([name, task], buckets, sum_value=values[-1])
    yield from (counts, runtimes)


__all__ = ["TasksCollector", "exposition", "require_prometheus"]
