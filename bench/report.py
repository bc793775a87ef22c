"""Turn a run's results into ``results.json`` (raw) and ``RESULTS.md`` (tables)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from bench.configs import CONFIGS
from bench.measure import spread

#: En dash and multiplication sign, spelled out for the linter.
DASH = "\u2013"
TIMES = "\u00d7"
FT = "flask-tasks"
FT_SQLITE = "flask-tasks-sqlite"
FT_POSTGRESQL = "flask-tasks-postgresql"
FT_RABBITMQ = "flask-tasks-rabbitmq"
#: Flask-Tasks on each broker, in the order of the brokers section.
FT_BROKERS = (
    (FT, "Redis"),
    (FT_SQLITE, "SQLite (embedded)"),
    (FT_POSTGRESQL, "PostgreSQL (messages and results)"),
    (FT_RABBITMQ, "RabbitMQ (results in Redis)"),
)
BULK_PATHS = {
    FT: "group(...).apply_async(): one Broker.publish",
    FT_SQLITE: "group(...).apply_async(): one Broker.publish",
    FT_POSTGRESQL: "group(...).apply_async(): one Broker.publish",
    FT_RABBITMQ: "group(...).apply_async(): one Broker.publish",
    "flask-tasks-users": "group(...).apply_async(): one Broker.publish",
    "flask-tasks-20-queues": "group(...).apply_async(): one Broker.publish",
    "celery-prefork": "group(...).apply_async()",
    "rq": "Queue.enqueue_many() (one pipeline)",
}
ENQUEUE_NAMES = {
    FT: "Flask-Tasks (Redis)",
    FT_SQLITE: "Flask-Tasks (SQLite)",
    FT_POSTGRESQL: "Flask-Tasks (PostgreSQL)",
    FT_RABBITMQ: "Flask-Tasks (RabbitMQ, results in Redis)",
    "flask-tasks-users": "Flask-Tasks (Redis, results in db 1, signed)",
    "flask-tasks-20-queues": "Flask-Tasks (Redis, 20 queues in turn)",
    "celery": "Celery",
    "rq": "RQ",
    "dramatiq": "Dramatiq",
    "huey": "Huey",
}


# -- formatting ----------------------------------------------------------------------------


def _number(value: float, digits: int) -> str:
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def cell(values: Sequence[Any], digits: int = 0, scale: float = 1.0) -> str:
    """``median (min-max)`` of repeated values, or a dash when there are none."""
    summary = spread([v * scale for v in values if v is not None])
    if summary is None:
        return DASH
    if summary["n"] == 1:
        return _number(summary["median"], digits)
    return (
        f"{_number(summary['median'], digits)} "
        f"({_number(summary['min'], digits)}{DASH}{_number(summary['max'], digits)})"
    )


def median(values: Sequence[Any]) -> Optional[float]:
    summary = spread([v for v in values if v is not None])
    return None if summary is None else summary["median"]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def section(
    title: str, text: str, header: Sequence[str], rows: Sequence[Sequence[str]]
) -> list[str]:
    """A titled table with a paragraph before it."""
    return [title, "", text, "", *table(header, rows)]


def ratio(value: Optional[float], other: Optional[float], digits: int = 2) -> str:
    if value is None or not other:
        return DASH
    return f"{value / other:.{digits}f}{TIMES}"


# -- reading results -----------------------------------------------------------------------


class View:
    """Convenient access to one run's results."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.configs: dict[str, dict[str, Any]] = results["configs"]
        self.peers = [name for name in self.configs if CONFIGS[name].peer]

    def values(self, name: str, key: str) -> list[Any]:
        return list(self.configs.get(name, {}).get(key, []))

    def field(self, name: str, key: str, inner: str) -> list[Any]:
        return [item[inner] for item in self.values(name, key) if item]

    def median(self, name: str, key: str) -> Optional[float]:
        return median(self.values(name, key))

    def enqueue_group(self, name: str) -> str:
        config = CONFIGS[name]
        if config.library == FT:
            if config.results_db is not None or config.broker != "redis" or config.env:
                # Signs its messages, another broker, or other queues: a producer of its own.
                return name
            return FT
        return config.library

    def n(self, name: str) -> int:
        return int(self.configs[name].get("n") or self.results["meta"]["settings"]["n"])

    @staticmethod
    def label(name: str) -> str:
        return f"{name} (informational)" if CONFIGS[name].informational else name

    def enqueue_values(self, group: str) -> list[float]:
        """Enqueue rates of every configuration sharing a producer (pooled)."""
        return [
            rate
            for name in self.configs
            if self.enqueue_group(name) == group
            for rate in self.values(name, "enqueue")
        ]

    def best_peer(self, key: str, pick: Callable[..., Any] = max) -> tuple[str, Optional[float]]:
        found = [(self.median(name, key), name) for name in self.peers]
        found = [(value, name) for value, name in found if value is not None]
        if not found:
            return "n/a", None
        value, name = pick(found)
        return name, value

    def best_peer_enqueue(self) -> tuple[str, Optional[float]]:
        groups = {self.enqueue_group(name) for name in self.peers}
        found = [(median(self.enqueue_values(group)), group) for group in groups]
        found = [(value, group) for value, group in found if value is not None]
        if not found:
            return "n/a", None
        value, group = max(found)
        return group, value


# -- sections ------------------------------------------------------------------------------


def header_section(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    settings = meta["settings"]
    versions = meta["versions"]
    loads = results.get("loads", [])
    peak = max((load[0] for load in loads), default=0.0)
    lines = [
        "# Flask-Tasks benchmark results",
        "",
        f"Produced by `bench/run.sh` on {meta['date']} (run took {meta.get('seconds', 0) / 60:.1f} min). "
        "How it measures: [bench/README.md](README.md). Raw numbers: `bench/results.json`.",
        "",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB RAM; "
        f"{meta['platform']}",
        f"- Python {versions.get('python')}, redis-server {meta['redis_server']} "
        "(throwaway, loopback, no persistence), every process from the same virtual "
        f"environment; redis-py {versions.get('redis')} with hiredis {versions.get('hiredis')}",
        f"- Flask-Tasks {versions.get('Flask-Tasks')} at commit {meta['commit']}"
        + (" plus uncommitted changes to `flask_tasks/`" if meta.get("dirty") else "")
        + (
            f" (source digest {meta['code_digest']}; every process ran a copy taken at the "
            "start"
            + (
                ", and the working tree changed during the run"
                if meta.get("code_changed_during_run")
                else ""
            )
            + ")"
            if meta.get("code_digest")
            else ""
        ),
        *(
            [
                "- Broker servers (the machine's own unless said throwaway): "
                + "; ".join(meta["servers"].values())
            ]
            if meta.get("servers")
            else []
        ),
        "- Peers: "
        + ", ".join(
            f"{name} {versions.get(name)}"
            for name in ("celery", "kombu", "billiard", "rq", "dramatiq", "huey")
            if versions.get(name)
        ),
        f"- Settings: {settings['n']:,} tasks per enqueue/drain, {settings['roundtrips']} "
        f"timed round trips, {settings['repeat']} repetitions (interleaved: every "
        f"configuration once, then again); cells are median (min{DASH}max) over repetitions",
        "- Load average (1, 5, 15 min) at each repetition's start and at the end: "
        + "; ".join(", ".join(f"{value:.2f}" for value in load) for load in loads),
    ]
    laps = results.get("cpu", [])
    if laps:
        seconds = sum(lap["seconds"] for lap in laps)
        other = sum(lap["other_cores"] * lap["seconds"] for lap in laps) / seconds
        ours = sum(lap["ours_cores"] * lap["seconds"] for lap in laps) / seconds
        busiest = max(laps, key=lambda lap: lap["other_cores"])
        lines.append(
            f"- CPU: the benchmark's own processes (producers, workers, redis-server, harness) "
            f"kept {ours:.2f} cores busy on average; **other work on the machine used "
            f"{other:.2f} cores on average** (at most {busiest['other_cores']:.2f}, during "
            f"{busiest['config']}, repetition {busiest['rep'] + 1}), measured from /proc"
        )
        if other > 0.25 * (meta["cores"] or 1) or peak > 2 * (meta["cores"] or 1):
            lines.append(
                "- **Note: the machine was shared** with other work during this run (see "
                "above): absolute numbers are lower and noisier than on an idle machine. "
                "Every configuration ran interleaved through the same conditions, so the "
                "ratios are the figures to read."
            )
    elif peak > 2 * (meta["cores"] or 1):
        lines.append(f"- **Note: the machine was busy** (1-minute load up to {peak:.1f}).")
    return [*lines, ""]


def targets_section(view: View) -> list[str]:
    ft_drain = view.median(FT, "drain")
    ft_p50 = view.median(FT, "rt_p50")
    ft_enqueue = median(view.enqueue_values(FT))
    ft_bulk = view.median(FT, "bulk")
    peer_drain_name, peer_drain = view.best_peer("drain")
    celery_prefork = view.median("celery-prefork", "drain")
    peer_p50_name, peer_p50 = view.best_peer("rt_p50", min)
    peer_enqueue_name, peer_enqueue = view.best_peer_enqueue()
    celery_threads = median(view.field("celery-threads", "memory_idle", "rss_kib"))
    ft_memory = median(view.field(FT, "memory_idle", "rss_kib"))
    growth = view.results.get("growth", {}).get(FT, {})
    sizes = sorted(growth, key=int)
    flat = None
    paired_note = ""
    if len(sizes) >= 2:
        largest, smallest = growth[sizes[-1]]["drain"], growth[sizes[0]]["drain"]
        flat = (median(largest), median(smallest))
        paired = median([a / b for a, b in zip(largest, smallest) if b])
        if paired is not None:
            paired_note = f" (paired runs: {paired:.2f}{TIMES})"

    def check(
        value: Optional[float], other: Optional[float], want: float, lower: bool = False
    ) -> tuple[str, str]:
        if value is None or not other:
            return DASH, "n/a"
        measured = value / other
        met = measured <= want if lower else measured >= want
        return f"{measured:.2f}{TIMES}", "**yes**" if met else "**no**"

    rows = []
    for label, value, other, want, lower in [
        (
            f"drain ≥ 1.5{TIMES} the fastest peer ({peer_drain_name})",
            ft_drain,
            peer_drain,
            1.5,
            False,
        ),
        (f"drain ≥ 6{TIMES} Celery prefork", ft_drain, celery_prefork, 6.0, False),
        (
            f"round trip p50 ≤ 0.6{TIMES} the fastest peer's ({peer_p50_name})",
            ft_p50,
            peer_p50,
            0.6,
            True,
        ),
        (
            f"enqueue ≥ the fastest peer's ({peer_enqueue_name})",
            ft_enqueue,
            peer_enqueue,
            1.0,
            False,
        ),
        (
            f"bulk enqueue ≥ 5{TIMES} the fastest peer's enqueue ({peer_enqueue_name})",
            ft_bulk,
            peer_enqueue,
            5.0,
            False,
        ),
        (
            f"drain with {int(sizes[-1]):,} waiting within 10 % of with {int(sizes[0]):,}"
            if flat
            else "flat cost as the queue grows",
            flat[0] if flat else None,
            flat[1] if flat else None,
            0.9,
            False,
        ),
        ("idle worker RSS ≤ Celery threads'", ft_memory, celery_threads, 1.0, True),
        (
            "(informational) idle PSS ≤ Celery threads'",
            median(view.field(FT, "memory_idle", "pss_kib")),
            median(view.field("celery-threads", "memory_idle", "pss_kib")),
            1.0,
            True,
        ),
        (
            "(informational) idle RSS of `-P threads -c 2` ≤ Celery threads'",
            median(view.field("flask-tasks-threads", "memory_idle", "rss_kib")),
            celery_threads,
            1.0,
            True,
        ),
    ]:
        measured, met = check(value, other, want, lower)
        if label.startswith("drain with"):
            measured += paired_note
        rows.append([label, measured, met])
    return [
        "## Earlier targets (round one: Flask-Tasks on Redis, defaults; ratios of medians)",
        "",
        *table(["target", "Flask-Tasks ÷ reference", "met"], rows),
    ]


def enqueue_section(view: View) -> list[str]:
    rows = []
    groups: list[str] = []
    for name in view.configs:
        group = view.enqueue_group(name)
        if group not in groups:
            groups.append(group)
    for group in groups:
        bulk = [
            name
            for name in view.configs
            if view.enqueue_group(name) == group and view.values(name, "bulk")
        ]
        rows.append(
            [
                ENQUEUE_NAMES.get(group, group),
                cell(view.enqueue_values(group)),
                cell(view.values(bulk[0], "bulk")) if bulk else DASH,
                BULK_PATHS.get(bulk[0], "") if bulk else "",
            ]
        )
    n = view.results["meta"]["settings"]["n"]
    return [
        f"## 1. Enqueue rate: {n:,} no-op tasks from one producer (tasks/s)",
        "",
        "One process calling `delay()` (RQ: `Queue.enqueue`, Dramatiq: `send`, Huey: the task "
        "call) in a loop; the time covers the calls only. Libraries measured under two "
        "worker modes pool the samples of both (same producer code).",
        "",
        *table(["library", "enqueue", "bulk", "bulk path"], rows),
    ]


def drain_section(view: View) -> list[str]:
    rows = []
    for name in view.configs:
        startup = view.median(name, "startup")
        seconds = view.values(name, "drain_seconds")
        n = view.n(name)
        steady = [n / (s - startup) for s in seconds if startup is not None and s > startup]
        rows.append(
            [
                view.label(name)
                + ("" if n == view.results["meta"]["settings"]["n"] else f" ({n:,} tasks)"),
                CONFIGS[name].processes,
                f"**{cell(view.values(name, 'drain'))}**",
                cell(seconds, 2),
                cell(view.values(name, "startup"), 2),
                cell(steady),
            ]
        )
    n = view.results["meta"]["settings"]["n"]
    return [
        f"## 2. Drain rate: {n:,} queued no-op tasks, results stored, concurrency 2 (tasks/s)",
        "",
        "The tasks are queued with no worker running; the clock starts when the worker "
        "command is launched and stops when the last result is stored (polled every 20 ms). "
        "Start-up (launch → first result, measured in the round-trip phase) is included in "
        "the drain rate and also shown alone; the last column subtracts it (derived).",
        "",
        *table(
            ["configuration", "processes", "drain", "seconds", "start-up s", "excl. start-up"], rows
        ),
    ]


def roundtrip_section(view: View) -> list[str]:
    rows = [
        [
            name,
            f"**{cell(view.values(name, 'rt_p50'), 2)}**",
            cell(view.values(name, "rt_p95"), 2),
            cell(view.values(name, "rt_p99"), 2),
        ]
        for name in view.configs
    ]
    count = view.results["meta"]["settings"]["roundtrips"]
    return [
        f"## 3. Round trip: {count} sequential `delay().get()` on a warm idle worker (ms)",
        "",
        "After a probe task and 20 untimed calls. Percentiles are per repetition (nearest "
        f"rank), then median (min{DASH}max) across repetitions.",
        "",
        *table(["configuration", "p50", "p95", "p99"], rows),
    ]


def memory_section(view: View) -> list[str]:
    rows = []
    for name in view.configs:
        processes = view.field(name, "memory_idle", "processes")
        rows.append(
            [
                name,
                str(processes[0]) if processes else DASH,
                f"**{cell(view.field(name, 'memory_idle', 'rss_kib'), 1, 1 / 1024)}**",
                cell(view.field(name, "memory_after", "rss_kib"), 1, 1 / 1024),
                cell(view.field(name, "memory_idle", "pss_kib"), 1, 1 / 1024),
                cell(view.field(name, "memory_after", "pss_kib"), 1, 1 / 1024),
            ]
        )
    return [
        "## 4. Worker memory (MiB, all processes of the worker command added up)",
        "",
        f"Idle: {view.results['meta']['settings'].get('idle_settle', 1.0):g} s after the first (probe) task. After: at the end of the drain. RSS counts "
        "pages shared by forked processes once per process; PSS divides them among the "
        "sharers, so it is the fairer total for a pool.",
        "",
        *table(
            ["configuration", "processes", "RSS idle", "RSS after drain", "PSS idle", "PSS after"],
            rows,
        ),
    ]


def redis_section(view: View) -> list[str]:
    rows = []
    for name in view.configs:
        if CONFIGS[name].broker != "redis":
            continue
        rows.append(
            [
                name,
                cell(view.field(name, "enqueue_redis", "commands"), 1),
                cell(view.field(name, "enqueue_redis", "round_trips"), 2),
                cell(view.field(name, "drain_redis", "commands"), 1),
                cell(view.field(name, "drain_redis", "round_trips"), 2),
                cell(view.field(name, "drain_redis", "scripts"), 2),
                cell(view.field(name, "enqueue_redis", "cpu_us"), 0),
                cell(view.field(name, "drain_redis", "cpu_us"), 0),
                cell(view.field(name, "bulk_redis", "commands"), 1),
                cell(view.field(name, "bulk_redis", "round_trips"), 3),
                cell(view.field(name, "rt_redis", "commands"), 1),
                f"**{cell(view.field(name, 'rt_redis', 'round_trips'), 2)}**",
            ]
        )
    lines = [
        "## 5. Redis work per task",
        "",
        "From `INFO commandstats` and `INFO stats` around each phase (`CONFIG RESETSTAT` "
        "first), less the harness's own polling. *Commands* counts every command the server "
        "ran, including those called inside Lua scripts; *round trips* is "
        "`total_reads_processed` (socket reads, one per request or pipeline); *scripts* "
        "counts EVALSHA/EVAL calls; *CPU* is the server's user+system CPU time. The drain "
        "includes the workers' start-up and idle polling during the run. The "
        "`delay().get()` columns divide the round-trip phase (the timed calls and the 20 "
        "warm-up calls before them) by its calls: the producer's publish and wait, and the "
        "workers' wake-up, reserve and settle, idle waits included. A bulk request larger "
        "than the server's read buffer (16 KiB) counts one read per buffer.",
        "",
        *table(
            [
                "configuration",
                "enqueue cmds",
                "enqueue round trips",
                "drain cmds",
                "drain round trips",
                "drain scripts",
                "enqueue CPU µs",
                "drain CPU µs",
                "bulk cmds",
                "bulk round trips",
                "cmds per delay().get()",
                "round trips per delay().get()",
            ],
            rows,
        ),
    ]
    work = view.values(FT, "drain_redis")
    if work and work[-1]:
        last = work[-1]
        breakdown = last["breakdown"]
        usec = last.get("usec", {})
        lines += [
            "Flask-Tasks' drain, command by command (last repetition; per task):",
            "",
            *table(
                ["command", "calls", "server µs"],
                [
                    [name, f"{calls:.2f}", f"{usec.get(name, 0):.1f}"]
                    for name, calls in breakdown.items()
                    if calls >= 0.01
                ],
            ),
        ]
    return lines


def growth_section(view: View) -> list[str]:
    lines: list[str] = []
    for name, sizes in view.results.get("growth", {}).items():
        ordered = sorted(sizes, key=int)
        if not ordered:
            continue
        first = sizes[ordered[0]]
        base = median(first["drain"])
        rows = []
        for size in ordered:
            record = sizes[size]
            # Each repetition of this size ran right after the same repetition of the
            # smallest: the ratio within a pair cancels slow drifts of the machine.
            paired = [a / b for a, b in zip(record["drain"], first["drain"]) if b]
            rows.append(
                [
                    f"{int(size):,}",
                    f"{record['backlog']['ready']:,} / {record['backlog']['delayed']:,}",
                    f"{record['preload_seconds']:.1f}",
                    f"**{cell(record['drain'])}**",
                    ratio(median(record["drain"]), base),
                    cell(paired, 2),
                    cell([w["commands"] for w in record.get("drain_redis", []) if w], 1),
                    cell([w["cpu_us"] for w in record.get("drain_redis", []) if w], 0),
                ]
            )
        memory = sizes[ordered[-1]].get("redis_used_memory")
        n = view.results["meta"]["settings"]["n"]
        lines += [
            f"## 6. Cost as work grows ({name}): drain of {n:,} tasks with a backlog waiting",
            "",
            "Each backlog is loaded first with the broker's bulk publish (`Broker.publish`, 5,000 "
            "messages per call; not timed), under a key prefix of its own on the same "
            "server: half delayed by a day, half ready in the same queue at priority 9, "
            "behind the measured tasks (priority 5). The repetitions then alternate between "
            "the sizes. Ready backlog messages the workers took after the measured ones are "
            "replaced before each repetition. *Paired* is the median (min-max) of the ratio "
            "within each repetition's pair of runs."
            + (
                f" Redis held {memory / 2**20:,.0f} MiB with every backlog loaded."
                if memory
                else ""
            ),
            "",
            *table(
                [
                    "backlog",
                    "ready / delayed",
                    "load s",
                    "drain tasks/s",
                    "÷ smallest (medians)",
                    "÷ smallest (paired)",
                    "cmds/task",
                    "Redis CPU µs/task",
                ],
                rows,
            ),
        ]
    return lines


def brokers_section(view: View) -> list[str]:
    names = [name for name, _label in FT_BROKERS[1:] if name in view.configs]
    skipped = view.results.get("skipped", {})
    if not names and not any(name in skipped for name, _label in FT_BROKERS):
        return []
    rows = []
    for name, label in FT_BROKERS:
        if name not in view.configs:
            continue
        rows.append(
            [
                label,
                cell(view.enqueue_values(name)),
                cell(view.values(name, "bulk")),
                f"**{cell(view.values(name, 'drain'))}**",
                f"**{cell(view.values(name, 'rt_p50'), 2)}**",
                cell(view.values(name, "rt_p95"), 2),
                cell(view.values(name, "rt_p99"), 2),
                cell(view.values(name, "startup"), 2),
            ]
        )
    lines = [
        "## 7. Flask-Tasks on each broker",
        "",
        "Same worker command and settings. SQLite: `sqlite:///<tmp>/bench.sqlite3`, a fresh "
        "file per phase. PostgreSQL: messages and results in a fresh database per phase "
        "(tables created before the timed part, as `flask tasks init-db` does). RabbitMQ: a "
        "vhost of the run's own, a key prefix per phase, results in the run's Redis (db 1). "
        "The PostgreSQL and RabbitMQ servers are not the benchmark's own processes: their CPU "
        "counts as other work in the Configurations table.",
        "",
        *table(
            [
                "broker",
                "enqueue/s",
                "bulk/s",
                "drain/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "start-up s",
            ],
            rows,
        ),
    ]
    for name, label in FT_BROKERS:
        if name in skipped:
            lines += ["", f"{label}: not measured ({name} skipped: {skipped[name]})."]
    return lines


def ratios_section(view: View) -> list[str]:
    if FT not in view.configs or not view.peers:
        return []
    ft_enqueue = median(view.enqueue_values(FT))
    ft_drain = view.median(FT, "drain")
    ft_p50 = view.median(FT, "rt_p50")
    ft_rss = median(view.field(FT, "memory_idle", "rss_kib"))
    ft_pss = median(view.field(FT, "memory_idle", "pss_kib"))
    rows = []
    for name in view.peers:
        rows.append(
            [
                name,
                ratio(ft_enqueue, median(view.enqueue_values(view.enqueue_group(name)))),
                ratio(
                    view.median(FT, "bulk"), median(view.enqueue_values(view.enqueue_group(name)))
                ),
                ratio(ft_drain, view.median(name, "drain")),
                ratio(ft_p50, view.median(name, "rt_p50")),
                ratio(ft_rss, median(view.field(name, "memory_idle", "rss_kib"))),
                ratio(ft_pss, median(view.field(name, "memory_idle", "pss_kib"))),
            ]
        )
    return [
        "## Flask-Tasks ÷ each peer (same run; medians)",
        "",
        f"Above 1{TIMES} is better for Flask-Tasks in the enqueue and drain columns; below 1{TIMES} is "
        "better in the latency and memory columns.",
        "",
        *table(
            [
                "peer",
                "enqueue",
                "bulk ÷ peer enqueue",
                "drain",
                "round trip p50",
                "idle RSS",
                "idle PSS",
            ],
            rows,
        ),
    ]


def settings_section(view: View) -> list[str]:
    laps: dict[str, list[float]] = {}
    for lap in view.results.get("cpu", []):
        laps.setdefault(lap["config"], []).append(lap["other_cores"])
    rows = [
        [
            name,
            CONFIGS[name].description.replace(
                "{prefetch}", str((view.values(name, "prefetch") or ["?"])[0])
            ),
            cell(laps.get(name, []), 2),
        ]
        for name in view.configs
    ]
    errors = [
        f"- {name}: {error}"
        for name, record in view.configs.items()
        for error in record.get("errors", [])
    ]
    lines = [
        "## Configurations",
        "",
        "The last column is the CPU that other work on the machine used while the "
        "configuration was measured (cores, out of " + str(view.results["meta"]["cores"]) + ").",
        "",
        *table(["configuration", "worker command", "other work, cores"], rows),
    ]
    skipped = view.results.get("skipped", {})
    if skipped:
        lines += ["", "## Skipped configurations", ""]
        lines += [f"- {name}: {reason}" for name, reason in skipped.items()]
        lines += [""]
    if errors:
        lines += ["## Errors during the run", "", *errors, ""]
    return lines


def render(results: dict[str, Any]) -> str:
    view = View(results)
    from bench.targets import issue_targets_section

    sections = [
        header_section(results),
        issue_targets_section(view) if FT in view.configs else [],
        targets_section(view) if FT in view.configs else [],
        ratios_section(view),
        enqueue_section(view),
        drain_section(view),
        roundtrip_section(view),
        memory_section(view),
        redis_section(view),
        growth_section(view),
        brokers_section(view),
        settings_section(view),
    ]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"


def write_report(results: dict[str, Any], options: Any) -> tuple[Path, Path]:
    results_file = options.out / "results.json"
    results_file.write_text(json.dumps(results, indent=1, default=str) + "\n")
    report_file = options.out / "RESULTS.md"
    report_file.write_text(render(results))
    return results_file, report_file


def main() -> None:
    """Re-render RESULTS.md from a results.json: ``python -m bench.report [results.json]``."""
    import sys

    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("results.json"))
    results = json.loads(path.read_text())
    path.with_name("RESULTS.md").write_text(render(results))


if __name__ == "__main__":
    main()
