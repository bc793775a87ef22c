"""Run the benchmark and write ``results.json`` and ``RESULTS.md`` (see README.md).

    python -m bench.harness [--n 10000] [--repeat 3] [--configs flask-tasks,celery-prefork,...]

Normally started by ``bench/run.sh``, which prepares the virtual environment first. Starts
a throwaway ``redis-server`` on a free loopback port and measures each configuration in
turn, repetition by repetition (so that a burst of machine noise hits every library alike).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench.configs import CONFIGS, Config, detector_for
from bench.machine import CpuMeter, describe_machine, load_average
from bench.measure import ClientProcess, RedisStats, percentile
from bench.procs import WorkerGroup
from bench.servers import Servers, Unavailable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from redis_server import redis_server  # noqa: E402 - tests/redis_server.py, reused

#: Seconds between two looks at the store while a drain runs.
POLL_INTERVAL = 0.02
#: Configurations whose library has a bulk path that the benchmark measures too.
#: (Celery's group publishes one message at a time, slower than delay(): not repeated here.)
#: The SECRET_KEY of configurations that sign their messages.
BENCH_SECRET = "bench-secret-key"
BULK_CONFIGS = (
    "flask-tasks",
    "flask-tasks-users",
    "flask-tasks-20-queues",
    "flask-tasks-sqlite",
    "flask-tasks-postgresql",
    "flask-tasks-rabbitmq",
    "rq",
)
#: The Redis database that holds results behind RabbitMQ.
AMQP_RESULTS_DB = 1


@dataclass
class Options:
    n: int
    repeat: int
    roundtrips: int
    configs: list[str]
    growth: list[int]
    growth_repeat: int
    growth_configs: list[str]
    python: str
    idle_settle: float
    out: Path
    logs: Path


def snapshot_package(directory: Path) -> str:
    """Copy ``flask_tasks/`` into ``directory`` and put it first on the import path of
    this process and of every process started (``PYTHONPATH``): a change to the working
    tree during the run does not reach its later workers. Returns a digest of the copy.

    The copy is byte-compiled, as pip compiles an installed package (and the peers'): a
    worker that compiled its sources at import would keep the compiler's leftovers in
    memory, and its forked children write over the pages they fragment."""
    source = REPO / "flask_tasks"
    shutil.copytree(source, directory / "flask_tasks", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(directory / "flask_tasks", quiet=1)
    sys.path.insert(0, str(directory))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(directory), os.environ.get("PYTHONPATH")])
    )
    return package_digest(directory / "flask_tasks")


def package_digest(root: Path) -> str:
    """A digest of the package's source files (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def banner_prefetch(log: Path) -> Optional[int]:
    """The prefetch a Flask-Tasks worker printed in its banner."""
    found = re.search(r"prefetch (\d+)", log.read_text(errors="replace"))
    return int(found.group(1)) if found else None


class Bench:
    """One run: a Redis server, the configurations, the results gathered so far."""

    def __init__(self, options: Options, redis_url: str, code: Path, servers: Servers) -> None:
        import redis

        from bench.apps.ft_app import create_app

        self.options = options
        self.redis_url = redis_url
        self.servers = servers
        #: Working directory of every process started: the package snapshot, so that the
        #: directory Python puts first on sys.path holds the copy, not the checkout.
        self.cwd = code
        self.redis = redis.Redis.from_url(redis_url)
        self.stats = RedisStats(self.redis)
        self.sqlite_dir = Path(tempfile.mkdtemp(prefix="flask-tasks-bench-"))
        self.create_app = create_app
        self.ft_redis = create_app(redis_url).extensions["tasks"]
        #: Flask-Tasks states with results in another database (per database number).
        self.ft_elsewhere: dict[int, Any] = {}
        self.results: dict[str, Any] = {
            "configs": {name: defaultdict(list) for name in options.configs},
            "growth": {},
            "skipped": {},
            "cpu": [],
        }
        self.cpu = CpuMeter()

    # -- plumbing ---------------------------------------------------------------------------

    def env(self, broker_url: str) -> dict[str, str]:
        env = dict(os.environ)
        # The package snapshot (already first in PYTHONPATH) wins over the checkout.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
        env["BENCH_REDIS_URL"] = self.redis_url
        env["BENCH_FT_BROKER"] = broker_url
        for name in ("FLASK_APP", "FLASK_DEBUG"):
            env.pop(name, None)
        return env

    def log(self, config: Config, what: str, rep: int) -> Path:
        return self.options.logs / f"{config.name}-{what}-{rep}.log"

    def workers(self, config: Config, env: dict[str, str], log: Path) -> WorkerGroup:
        commands = [
            [self.options.python, "-m", *(part.format(redis_url=self.redis_url) for part in cmd)]
            for cmd in config.workers
        ]
        return WorkerGroup(commands, env, self.cwd, log)

    def client(
        self,
        config: Config,
        action: str,
        count: int,
        env: dict[str, str],
        log: Path,
        ids_out: Optional[Path] = None,
    ) -> ClientProcess:
        client = ClientProcess(
            self.options.python, config.library, action, count, env, self.cwd, log, ids_out
        )
        client.expect("ready", 120)
        return client

    @contextlib.contextmanager
    def store(self, config: Config, rep: int, phase: str) -> Any:
        """A fresh, empty store for one phase: (Flask-Tasks state or None, env)."""
        self.redis.flushall()
        if config.broker in ("postgresql", "amqp"):
            with self.other_store(config, rep, phase) as found:
                yield found
            return
        if config.broker != "sqlite" and config.results_db is not None:
            backend = f"{self.redis_url.rsplit('/', 1)[0]}/{config.results_db}"
            state = self.ft_elsewhere.get(config.results_db)
            if state is None:
                app = self.create_app(self.redis_url, backend_url=backend, secret=BENCH_SECRET)
                state = self.ft_elsewhere[config.results_db] = app.extensions["tasks"]
            env = dict(self.env(self.redis_url), BENCH_FT_BACKEND=backend)
            yield state, dict(env, BENCH_FT_SECRET=BENCH_SECRET)
            return
        if config.broker != "sqlite":
            yield self.ft_redis, self.env(self.redis_url)
            return
        path = self.sqlite_dir / f"bench-{rep}-{phase}.sqlite3"
        url = f"sqlite:///{path}"
        state = self.create_app(url).extensions["tasks"]
        try:
            yield state, self.env(url)
        finally:
            state.close()
            for leftover in self.sqlite_dir.glob(path.name + "*"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()

    @contextlib.contextmanager
    def other_store(self, config: Config, rep: int, phase: str) -> Any:
        """:meth:`store` for PostgreSQL (a database per phase) and RabbitMQ (a key prefix
        per phase in the run's vhost, results in Redis)."""
        if config.broker == "postgresql":
            with self.servers.postgres_database() as url:
                state = self.create_app(url).extensions["tasks"]
                try:
                    state.store.create_schema()  # as `flask tasks init-db` does, untimed
                    yield state, self.env(url)
                finally:
                    state.close()
            return
        url = self.servers.require("amqp")
        prefix = f"bench-{rep}-{phase}"
        backend = f"{self.redis_url.rsplit('/', 1)[0]}/{AMQP_RESULTS_DB}"
        app = self.create_app(url, key_prefix=prefix, backend_url=backend)
        state = app.extensions["tasks"]
        try:
            yield state, dict(self.env(url), BENCH_FT_PREFIX=prefix, BENCH_FT_BACKEND=backend)
        finally:
            try:
                state.transport.purge(state.config.default_queue)  # what a bulk phase left
            finally:
                state.close()

    # -- phases -----------------------------------------------------------------------------

    def count(self, config: Config) -> int:
        """Tasks per enqueue and drain run for ``config``."""
        return min(self.options.n, config.max_tasks or self.options.n)

    def produce(
        self,
        config: Config,
        action: str,
        env: dict[str, str],
        log: Path,
        ids_out: Optional[Path] = None,
    ) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
        """Run a producer (enqueue or bulk) with the Redis statistics around it."""
        count = self.count(config)
        client = self.client(config, action, count, env, log, ids_out)
        self.stats.begin()
        client.send()
        outcome = client.outcome(max(300.0, count / 20))
        module = outcome.get("flask_tasks")
        if module and not module.startswith(str(self.cwd)):
            raise RuntimeError(f"the producer ran {module}, not the snapshot in {self.cwd}")
        redis_work = self.stats.end(count) if config.broker == "redis" else None
        return outcome, redis_work

    def drain(
        self,
        config: Config,
        env: dict[str, str],
        log: Path,
        ids_file: Path,
        state: Any,
        count: int,
    ) -> dict[str, Any]:
        """Start the workers on a full queue and time them until every result is in."""
        detector = detector_for(config, self.redis_url, count, ids_file, state)
        limit = max(180.0, count / 20)
        self.stats.begin()
        started = time.perf_counter()
        workers = self.workers(config, env, log)
        try:
            while not detector.poll():
                elapsed = time.perf_counter() - started
                failure = workers.check_alive()
                if failure or elapsed > limit:
                    raise RuntimeError(failure or f"drain not done after {elapsed:.0f}s")
                time.sleep(POLL_INTERVAL)
            seconds = time.perf_counter() - started
            memory = workers.memory()
            redis_work = self.stats.end(count, detector) if config.broker == "redis" else None
        finally:
            workers.stop()
        return {
            "seconds": seconds,
            "rate": count / seconds,
            "memory": memory.as_dict(),
            "redis": redis_work,
        }

    def roundtrip(self, config: Config, env: dict[str, str], log: Path) -> dict[str, Any]:
        """Start-up time (launch to first result), idle memory, then sequential calls."""
        count = self.options.roundtrips
        client = self.client(config, "roundtrip", count, env, log)
        launched = time.time()
        workers = self.workers(config, env, log)
        try:
            client.send()
            probe = client.expect("probe", 180)
            startup = float(probe.split()[1]) - launched
            time.sleep(self.options.idle_settle)
            idle = workers.memory()
            self.stats.begin()
            client.send()
            outcome = client.outcome(max(600.0, count * 2.0))
            calls = count + 20  # with the client's warm-up calls
            redis_work = self.stats.end(calls) if config.broker == "redis" else None
        finally:
            workers.stop()
            client.finish()
        samples = outcome["milliseconds"]
        return {
            "startup": startup,
            "memory": idle.as_dict(),
            "p50": percentile(samples, 0.50),
            "p95": percentile(samples, 0.95),
            "p99": percentile(samples, 0.99),
            "mean": sum(samples) / len(samples),
            "redis": redis_work,
        }

    # -- one configuration, one repetition --------------------------------------------------

    def measure(self, config: Config, rep: int) -> None:
        record = self.results["configs"][config.name]
        ids_file = self.options.logs / f"{config.name}-ids.json"
        with self.store(config, rep, "drain") as (state, env):
            env = {**env, **dict(config.env)}
            enqueued, redis_work = self.produce(
                config, "enqueue", env, self.log(config, "enqueue", rep), ids_file
            )
            record["enqueue"].append(enqueued["rate"])
            record["enqueue_redis"].append(redis_work)
            drained = self.drain(
                config, env, self.log(config, "drain", rep), ids_file, state, self.count(config)
            )
            record["n"] = self.count(config)
            record["drain"].append(drained["rate"])
            record["drain_seconds"].append(drained["seconds"])
            record["memory_after"].append(drained["memory"])
            record["drain_redis"].append(drained["redis"])
            if config.library == "flask-tasks":
                record["prefetch"].append(banner_prefetch(self.log(config, "drain", rep)))
        if config.name in BULK_CONFIGS:
            with self.store(config, rep, "bulk") as (_state, env):
                env = {**env, **dict(config.env)}
                bulk, redis_work = self.produce(config, "bulk", env, self.log(config, "bulk", rep))
                record["bulk"].append(bulk["rate"])
                record["bulk_redis"].append(redis_work)
        with self.store(config, rep, "roundtrip") as (_state, env):
            env = {**env, **dict(config.env)}
            trip = self.roundtrip(config, env, self.log(config, "roundtrip", rep))
        record["startup"].append(trip["startup"])
        record["memory_idle"].append(trip["memory"])
        for key in ("p50", "p95", "p99", "mean"):
            record[f"rt_{key}"].append(trip[key])
        record["rt_redis"].append(trip["redis"])

    def available(self) -> list[str]:
        """The configurations to measure: those whose server can be reached or started;
        the others are skipped with the reason (in RESULTS.md), never failing the run."""
        names = []
        for name in self.options.configs:
            try:
                self.servers.require(CONFIGS[name].broker)
            except Unavailable as error:
                print(f"[bench] skipping {name}: {error}", flush=True)
                self.results["skipped"][name] = str(error)
                del self.results["configs"][name]
                continue
            names.append(name)
        return names

    def run(self) -> None:
        options = self.options
        names = self.available()
        for rep in range(options.repeat):
            self.results.setdefault("loads", []).append(load_average())
            for name in names:
                config = CONFIGS[name]
                started = time.perf_counter()
                self.cpu.lap()
                try:
                    self.measure(config, rep)
                except Exception as error:
                    traceback.print_exc()
                    self.results["configs"][name]["errors"].append(f"rep {rep}: {error!r}")
                self.results["cpu"].append({"config": name, "rep": rep, **self.cpu.lap()})
                print(
                    f"[bench] rep {rep + 1}/{options.repeat} {name}: "
                    f"{time.perf_counter() - started:.1f}s",
                    flush=True,
                )
        for name in options.growth_configs:
            if options.growth:
                self.cpu.lap()
                from bench.growth import measure_growth

                self.results["growth"][name] = measure_growth(self, CONFIGS[name])
                self.results["cpu"].append({"config": f"growth {name}", "rep": 0, **self.cpu.lap()})
        self.results.setdefault("loads", []).append(load_average())

    def close(self) -> None:
        self.ft_redis.close()
        for state in self.ft_elsewhere.values():
            state.close()
        self.redis.close()
        shutil.rmtree(self.sqlite_dir, ignore_errors=True)


def parse_options(argv: Optional[list[str]]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks per enqueue/drain run")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every figure")
    parser.add_argument("--roundtrips", type=int, default=300, help="timed delay().get() calls")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated, from: {', '.join(CONFIGS)}"
    )
    parser.add_argument(
        "--growth",
        default="1000,1000000",
        help="backlog sizes for the cost-as-work-grows figure ('' to skip)",
    )
    parser.add_argument("--growth-repeat", type=int, default=5)
    parser.add_argument("--growth-configs", default="flask-tasks")
    parser.add_argument("--python", default=sys.executable, help="interpreter for all processes")
    parser.add_argument(
        "--idle-settle",
        type=float,
        default=1.0,
        help="seconds workers sit idle after their first task before their memory is read",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench", help="results directory")
    parser.add_argument("--logs", type=Path, help="worker and producer logs (default: a temp dir)")
    args = parser.parse_args(argv)
    configs = [name for name in args.configs.split(",") if name]
    for name in configs + args.growth_configs.split(","):
        if name and name not in CONFIGS:
            parser.error(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}")
    return Options(
        n=args.n,
        repeat=args.repeat,
        roundtrips=args.roundtrips,
        configs=configs,
        growth=[int(size) for size in args.growth.split(",") if size],
        growth_repeat=args.growth_repeat,
        growth_configs=[name for name in args.growth_configs.split(",") if name],
        python=args.python,
        idle_settle=args.idle_settle,
        out=args.out,
        logs=args.logs or Path(tempfile.mkdtemp(prefix="flask-tasks-bench-logs-")),
    )


def main(argv: Optional[list[str]] = None) -> int:
    from bench.report import write_report

    options = parse_options(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    options.logs.mkdir(parents=True, exist_ok=True)
    print(f"[bench] logs in {options.logs}", flush=True)
    started = time.time()
    snapshot = Path(tempfile.mkdtemp(prefix="flask-tasks-bench-code-"))
    try:
        digest = snapshot_package(snapshot)
        with redis_server() as url, contextlib.ExitStack() as servers:
            bench = Bench(options, url, snapshot, Servers(servers))
            try:
                bench.results["meta"] = describe_machine(options, url)
                bench.run()
                bench.results["meta"]["servers"] = bench.servers.describe()
            finally:
                bench.close()
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    results = bench.results
    results["meta"]["seconds"] = time.time() - started
    results["meta"]["code_digest"] = digest
    results["meta"]["code_changed_during_run"] = package_digest(REPO / "flask_tasks") != digest
    results_file, report_file = write_report(results, options)
    print(f"[bench] wrote {results_file} and {report_file}", flush=True)
    errors = [e for record in results["configs"].values() for e in record.get("errors", [])]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
