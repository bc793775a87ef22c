"""The scaling benchmark: drain rate and Redis CPU per task as worker processes are added.

    python -m bench.scaling [--workers 1,2,4,8,16] [--n 20000] [--repeat 3]
                            [--targets redis,cluster] [--out bench] [--logs DIR]

For each target (one ``redis-server``; a three-master Redis Cluster with 12 queues) and
each number of worker processes, one row: start that many ``flask worker -P solo``
processes on an empty store and wait until every one has announced itself, then publish
N no-op tasks (results stored) in batches of 1,000 and time until the last result is in.
Meanwhile the servers' CPU time (``INFO cpu``: ``used_cpu_sys`` + ``used_cpu_user``, summed
over the Cluster's masters) and the workers' (``/proc``) are read before and after. Writes
``SCALING.md`` and ``scaling.json`` (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench.configs import ResultTail
from bench.harness import REPO, package_digest, snapshot_package
from bench.machine import CpuMeter, describe_host, load_average
from bench.measure import spread
from bench.procs import WorkerGroup

#: Tasks per publish call (one script run on one Redis).
PUBLISH_BATCH = 1000
#: Queues the Cluster rows spread their tasks over.
CLUSTER_QUEUES = 12
#: Seconds between two looks at the results while a drain runs.
POLL_INTERVAL = 0.02
#: Longest wait for the workers of one row to announce themselves.
START_TIMEOUT = 180.0


class Unavailable(Exception):
    """A target that cannot run here; the reason goes into SCALING.md."""


@dataclass
class Target:
    """Where one set of rows runs: its broker URL, queues, and the servers whose CPU
    counts (plain clients, one per server)."""

    name: str
    url: str
    queues: list[str]
    nodes: list[Any]
    #: The harness's Flask app on this target (publishes, reads results), once opened.
    app: Any = None

    def cpu_seconds(self) -> float:
        total = 0.0
        for node in self.nodes:
            info = node.info("cpu")
            total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return total

    def flush(self) -> None:
        for node in self.nodes:
            node.flushall()

    def close(self) -> None:
        if self.app is not None:
            self.app.extensions["tasks"].close()
        for node in self.nodes:
            node.close()


def open_target(name: str, stack: contextlib.ExitStack) -> Target:
    """Start the servers of target ``name`` (stopped when ``stack`` closes)."""
    import redis
    from redis_server import redis_server  # tests/, on sys.path through bench.harness

    if name == "redis":
        url = stack.enter_context(redis_server())
        return Target(name, url, ["default"], [redis.Redis.from_url(url)])
    if name != "cluster":
        raise ValueError(f"unknown target {name!r}; known: redis, cluster")
    from flask_tasks.brokers.urls import check_url
    from flask_tasks.exceptions import ImproperlyConfigured

    try:
        check_url("redis+cluster://127.0.0.1:7000", "TASKS_BROKER_URL")
    except ImproperlyConfigured as error:
        raise Unavailable(
            f"this Flask-Tasks has no redis+cluster:// broker yet ({error})"
        ) from None
    try:
        from redis_cluster_server import redis_cluster
    except ImportError:
        raise Unavailable(
            "tests/redis_cluster_server.py (the Cluster starter) is not in this checkout"
        ) from None
    url = stack.enter_context(redis_cluster())
    ports = [int(address.rsplit(":", 1)[1]) for address in url.split("://", 1)[1].split(",")]
    nodes = [redis.Redis(host="127.0.0.1", port=port) for port in ports]
    queues = [f"q{index:02d}" for index in range(CLUSTER_QUEUES)]
    return Target(name, url, queues, nodes)


def process_cpu(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) used so far by the live processes ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        total += sum(int(value) for value in stat[stat.rfind(")") + 2 :].split()[11:13])
    return total / tick


@dataclass
class Options:
    workers: list[int]
    n: int
    repeat: int
    targets: list[str]
    python: str
    out: Path
    logs: Path


class Scaling:
    """One run: rows for every target and number of workers, repetition by repetition."""

    def __init__(self, options: Options, code: Path) -> None:
        self.options = options
        self.cwd = code  # the package snapshot, first on every process's path
        self.results: dict[str, Any] = {"rows": [], "skipped": {}, "loads": [], "errors": []}
        self.cpu = CpuMeter()

    def env(self, target: Target) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
        env["BENCH_FT_BROKER"] = target.url
        for name in ("FLASK_APP", "FLASK_DEBUG", "BENCH_FT_BACKEND", "BENCH_FT_SECRET"):
            env.pop(name, None)
        return env

    def start_workers(self, target: Target, count: int, app: Any, log: Path) -> WorkerGroup:
        names = [f"scale{index}@bench" for index in range(count)]
        command = [self.options.python, "-m", "flask", "--app", "bench.apps.ft_app", "worker"]
        commands = [
            [*command, "-P", "solo", "-l", "WARNING", "-n", name, "-Q", ",".join(target.queues)]
            for name in names
        ]
        workers = WorkerGroup(commands, self.env(target), self.cwd, log)
        state = app.extensions["tasks"]
        deadline = time.monotonic() + START_TIMEOUT
        # A consumer announces itself as "<hostname>:<pid>".
        while not set(names) <= {name.rsplit(":", 1)[0] for name in state.store.workers()}:
            failure = workers.check_alive()
            if failure or time.monotonic() > deadline:
                workers.stop()
                raise RuntimeError(failure or f"{count} workers did not start; see {log}")
            time.sleep(0.1)
        return workers

    def publish(self, app: Any, target: Target) -> list[str]:
        """Publish N no-op tasks over the target's queues, round robin; their ids."""
        from bench.apps.ft_app import noop
        from flask_tasks import group

        ids: list[str] = []
        queues = target.queues
        with app.app_context():
            for start in range(0, self.options.n, PUBLISH_BATCH):
                size = min(PUBLISH_BATCH, self.options.n - start)
                batch = (noop.s().set(queue=queues[(start + i) % len(queues)]) for i in range(size))
                ids += [result.id for result in group(batch).apply_async().results]
        return ids

    def row(self, target: Target, count: int, rep: int) -> dict[str, Any]:
        """Start ``count`` workers, publish N tasks, time the drain; one row's figures."""
        from bench.apps.ft_app import create_app

        target.flush()
        if target.app is None:
            target.app = create_app(target.url)
        app = target.app
        log = self.options.logs / f"{target.name}-{count}-{rep}.log"
        workers = self.start_workers(target, count, app, log)
        try:
            pids = workers.pids()
            server_before, workers_before = target.cpu_seconds(), process_cpu(pids)
            own_before = time.process_time()
            self.cpu.lap()
            started = time.perf_counter()
            ids = self.publish(app, target)
            published = time.perf_counter() - started
            detector = ResultTail(app.extensions["tasks"], ids).detector
            limit = max(120.0, self.options.n / 50)
            while not detector.poll():
                failure = workers.check_alive()
                if failure or time.perf_counter() - started > limit:
                    raise RuntimeError(failure or f"drain not done after {limit:.0f}s; see {log}")
                time.sleep(POLL_INTERVAL)
            seconds = time.perf_counter() - started
            server = target.cpu_seconds() - server_before
            worker_cpu = process_cpu(pids) - workers_before
            own = time.process_time() - own_before
            machine = self.cpu.lap()
        finally:
            workers.stop()
        n = self.options.n
        return {
            "target": target.name,
            "workers": count,
            "queues": len(target.queues),
            "rep": rep,
            "tasks": n,
            "seconds": seconds,
            "publish_seconds": published,
            "rate": n / seconds,
            "server_cpu_us": server * 1e6 / n,
            "server_busy": server / seconds,  # cores of the server(s): 1.0 = one core full
            "worker_cpu_us": worker_cpu * 1e6 / n,
            "harness_cpu_us": own * 1e6 / n,
            "machine": machine,
        }

    def run(self) -> None:
        with contextlib.ExitStack() as stack:
            targets = []
            for name in self.options.targets:
                try:
                    targets.append(open_target(name, stack))
                except Unavailable as error:
                    print(f"[scaling] skipping the {name} rows: {error}", flush=True)
                    self.results["skipped"][name] = str(error)
            for target in targets:
                stack.callback(target.close)
            self.results["servers"] = {t.name: _server_version(t) for t in targets}
            for rep in range(self.options.repeat):
                self.results["loads"].append(load_average())
                for target in targets:
                    for count in self.options.workers:
                        try:
                            row = self.row(target, count, rep)
                        except Exception as error:  # the other rows still run
                            traceback.print_exc()
                            self.results["errors"].append(
                                f"{target.name}, {count} worker(s), rep {rep + 1}: {error!r}"
                            )
                            continue
                        self.results["rows"].append(row)
                        print(
                            f"[scaling] rep {rep + 1}/{self.options.repeat} {target.name} "
                            f"{count} worker(s): {row['rate']:,.0f} tasks/s, "
                            f"server {row['server_cpu_us']:.0f} us/task "
                            f"({row['server_busy']:.0%} of a core)",
                            flush=True,
                        )
            self.results["loads"].append(load_average())

    def summary(self) -> list[dict[str, Any]]:
        """Medians over the repetitions, per target and number of workers."""
        rows: list[dict[str, Any]] = []
        keys = ("rate", "server_cpu_us", "server_busy", "worker_cpu_us", "harness_cpu_us")
        for target in self.options.targets:
            for count in self.options.workers:
                found = [
                    r
                    for r in self.results["rows"]
                    if (r["target"], r["workers"]) == (target, count)
                ]
                if found:
                    row = {"target": target, "workers": count, "queues": found[0]["queues"]}
                    row.update({key: spread([r[key] for r in found]) for key in keys})
                    row["other_cores"] = spread([r["machine"]["other_cores"] for r in found])
                    rows.append(row)
        return rows


def _versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    versions: dict[str, Optional[str]] = {"python": sys.version.split()[0]}
    for name in ("Flask-Tasks", "flask", "redis", "hiredis"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _server_version(target: Target) -> str:
    return str(target.nodes[0].info("server").get("redis_version"))


def parse_options(argv: Optional[list[str]]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4,8,16", help="worker processes per row")
    parser.add_argument("--n", type=int, default=20_000, help="tasks per row")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every row")
    parser.add_argument("--targets", default="redis,cluster", help="redis, cluster or both")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the workers")
    parser.add_argument("--out", type=Path, default=REPO / "bench", help="results directory")
    parser.add_argument("--logs", type=Path, help="worker logs (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        workers = [int(value) for value in args.workers.split(",") if value]
    except ValueError:
        parser.error(f"--workers takes numbers separated by commas, not {args.workers!r}")
    if not workers or min(workers) < 1 or args.n < 1 or args.repeat < 1:
        parser.error("--workers, --n and --repeat must be positive")
    targets = [name for name in args.targets.split(",") if name]
    unknown = set(targets) - {"redis", "cluster"}
    if unknown or not targets:
        parser.error(f"--targets takes redis and/or cluster, not {args.targets!r}")
    return Options(
        workers=workers,
        n=args.n,
        repeat=args.repeat,
        targets=targets,
        python=args.python,
        out=args.out,
        logs=args.logs or Path(tempfile.mkdtemp(prefix="flask-tasks-scaling-logs-")),
    )


def main(argv: Optional[list[str]] = None) -> int:
    from bench.scaling_report import write_report

    options = parse_options(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    options.logs.mkdir(parents=True, exist_ok=True)
    print(f"[scaling] logs in {options.logs}", flush=True)
    started = time.time()
    snapshot = Path(tempfile.mkdtemp(prefix="flask-tasks-scaling-code-"))
    try:
        digest = snapshot_package(snapshot)
        scaling = Scaling(options, snapshot)
        scaling.results["meta"] = describe_host()
        scaling.run()
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    results = scaling.results
    results["summary"] = scaling.summary()
    results["meta"].update(
        seconds=time.time() - started,
        code_digest=digest,
        code_changed_during_run=package_digest(REPO / "flask_tasks") != digest,
        versions=_versions(),
        settings={
            "workers": options.workers,
            "n": options.n,
            "repeat": options.repeat,
            "targets": options.targets,
        },
    )
    json_file, report_file = write_report(results, options.out)
    print(f"[scaling] wrote {json_file} and {report_file}", flush=True)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
