"""What is measured: each configuration's worker command and how to tell its work is done.

Every configuration runs the same no-op task with results stored, at concurrency 2:
two processes that execute tasks ("processes" pools), or two threads in one process
("threads" pools). See README.md for the per-library meaning and the flags chosen.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

CONCURRENCY = 2


@dataclass(frozen=True)
class Config:
    """One library in one pool mode."""

    name: str
    library: str
    #: The worker command lines, as Python module invocations after ``python -m``.
    workers: Sequence[Sequence[str]]
    description: str
    #: What "two worker processes" means here, for the README and RESULTS.md.
    processes: str
    #: ``redis``, ``sqlite``, ``postgresql`` or ``amqp`` (results in the run's Redis, db 1).
    broker: str = "redis"
    peer: bool = True
    #: Most tasks its enqueue and drain runs use (None: the run's N); for the slowest.
    max_tasks: int | None = None
    #: Shown beside the results but not used for the targets.
    informational: bool = False
    #: Flask-Tasks: results in this database of the same Redis server
    #: (``TASKS_RESULT_BACKEND``), and messages signed (``SECRET_KEY``), as users
    #: configure it; None: results in the broker's own database, unsigned.
    results_db: int | None = None
    #: Extra environment of its worker and producer processes (``BENCH_*`` switches read
    #: by ``bench/apps``: Huey's mode, Flask-Tasks' queues).
    env: tuple[tuple[str, str], ...] = ()


def _celery(pool: str) -> list[list[str]]:
    return [
        f"celery -A bench.apps.celery_app worker -P {pool} -c {CONCURRENCY} -l WARNING "
        "--without-gossip --without-mingle --without-heartbeat -Q celery".split()
    ]


def _rq(worker_class: str | None) -> list[list[str]]:
    command = ["rq.cli", "worker", "default", "--url", "{redis_url}", "--quiet"]
    if worker_class:
        command += ["-w", worker_class]
    return [command for _ in range(CONCURRENCY)]


def _dramatiq(processes: int, threads: int) -> list[list[str]]:
    return [f"dramatiq bench.apps.dramatiq_app --processes {processes} --threads {threads}".split()]


FLASK_TASKS_WORKER = (
    f"flask --app bench.apps.ft_app worker -P prefork -c {CONCURRENCY} -l WARNING".split()
)
HUEY_WORKER = f"huey.bin.huey_consumer bench.apps.huey_app.huey -w {CONCURRENCY} -k process -q"
#: Queues of the many-queues configuration: its worker consumes them all, and its
#: producer spreads the tasks over them in turn.
MANY_QUEUES = 20

CONFIGS: dict[str, Config] = {
    config.name: config
    for config in [
        Config(
            name="flask-tasks",
            library="flask-tasks",
            workers=[FLASK_TASKS_WORKER],
            description="flask worker -P prefork -c 2 -l WARNING "
            "(default prefetch: {prefetch} per child)",
            processes="1 supervisor + 2 forked children, each reserving and running tasks",
            peer=False,
        ),
        Config(
            name="celery-prefork",
            library="celery",
            workers=_celery("prefork"),
            description="celery worker -P prefork -c 2 -l WARNING --without-gossip "
            "--without-mingle --without-heartbeat (prefetch multiplier 4, the default)",
            processes="1 consumer process + 2 forked pool processes",
        ),
        Config(
            name="celery-threads",
            library="celery",
            workers=_celery("threads"),
            description="celery worker -P threads -c 2 -l WARNING --without-gossip "
            "--without-mingle --without-heartbeat",
            processes="1 process, 2 pool threads",
        ),
        Config(
            name="rq",
            library="rq",
            workers=_rq(None),
            description="2 x rq worker default --quiet (Worker: forks a work horse per job); "
            "1,000 tasks per enqueue/drain, as it runs a few dozen per second",
            processes="2 worker processes (each forks a short-lived horse per job)",
            max_tasks=1000,
        ),
        Config(
            name="rq-simple",
            library="rq",
            workers=_rq("rq.worker.SimpleWorker"),
            description="2 x rq worker default --quiet -w rq.worker.SimpleWorker",
            processes="2 worker processes, jobs run in-process",
        ),
        Config(
            name="dramatiq-processes",
            library="dramatiq",
            workers=_dramatiq(CONCURRENCY, 1),
            description="dramatiq bench.apps.dramatiq_app --processes 2 --threads 1 "
            "(Results middleware)",
            processes="1 supervisor + 2 worker processes with 1 worker thread each",
        ),
        Config(
            name="dramatiq-threads",
            library="dramatiq",
            workers=_dramatiq(1, CONCURRENCY),
            description="dramatiq bench.apps.dramatiq_app --processes 1 --threads 2 "
            "(Results middleware)",
            processes="1 supervisor + 1 worker process with 2 worker threads",
        ),
        Config(
            name="huey",
            library="huey",
            workers=[HUEY_WORKER.split()],
            description="huey_consumer bench.apps.huey_app.huey -w 2 -k process -q "
            "(store_none; Huey's default mode: result.get() polls with back-off)",
            processes="1 consumer/scheduler process + 2 worker processes",
        ),
        Config(
            name="huey-notify",
            library="huey",
            workers=[HUEY_WORKER.split()],
            description="huey_consumer bench.apps.huey_app.huey -w 2 -k process -q "
            "(store_none, notify_result: result.get() wakes on a BLPOP)",
            processes="1 consumer/scheduler process + 2 worker processes",
            env=(("BENCH_HUEY_NOTIFY", "1"),),
        ),
        Config(
            name="flask-tasks-prefetch4",
            library="flask-tasks",
            workers=[[*FLASK_TASKS_WORKER, "--prefetch", "4"]],
            description="flask worker -P prefork -c 2 -l WARNING --prefetch 4 "
            "(informational: each child holds up to 5 messages)",
            processes="1 supervisor + 2 forked children",
            peer=False,
            informational=True,
        ),
        Config(
            name="flask-tasks-threads",
            library="flask-tasks",
            workers=[[*FLASK_TASKS_WORKER[:5], "threads", *FLASK_TASKS_WORKER[6:]]],
            description="flask worker -P threads -c 2 -l WARNING (informational: the pool "
            "to set beside Celery's threads for memory)",
            processes="1 process, 2 pool threads",
            peer=False,
            informational=True,
        ),
        Config(
            name="flask-tasks-users",
            library="flask-tasks",
            workers=[FLASK_TASKS_WORKER],
            description="flask worker -P prefork -c 2 -l WARNING "
            "(default prefetch: {prefetch} per child), TASKS_RESULT_BACKEND = the same "
            "server, db 1, SECRET_KEY set (messages signed), as users configure it",
            processes="1 supervisor + 2 forked children, each reserving and running tasks",
            peer=False,
            results_db=1,
        ),
        Config(
            name="flask-tasks-20-queues",
            library="flask-tasks",
            workers=[[*FLASK_TASKS_WORKER, "-Q", ",".join(f"q{n}" for n in range(MANY_QUEUES))]],
            description="flask worker -P prefork -c 2 -l WARNING -Q q0,...,q19 "
            "(default prefetch: {prefetch} per child), the tasks spread over the 20 queues "
            "in turn; otherwise as flask-tasks",
            processes="1 supervisor + 2 forked children, each reserving from all 20 queues",
            peer=False,
            env=(("BENCH_FT_QUEUES", str(MANY_QUEUES)),),
        ),
        Config(
            name="flask-tasks-sqlite",
            library="flask-tasks",
            workers=[FLASK_TASKS_WORKER],
            description="flask worker -P prefork -c 2 -l WARNING "
            "(default prefetch: {prefetch} per child), "
            "TASKS_BROKER_URL = sqlite:///<tmp>/bench.sqlite3",
            processes="1 supervisor + 2 forked children",
            broker="sqlite",
            peer=False,
        ),
        Config(
            name="flask-tasks-postgresql",
            library="flask-tasks",
            workers=[FLASK_TASKS_WORKER],
            description="flask worker -P prefork -c 2 -l WARNING "
            "(default prefetch: {prefetch} per child), "
            "TASKS_BROKER_URL = postgresql://postgres@<server>/flask_tasks_bench_<random> "
            "(messages and results)",
            processes="1 supervisor + 2 forked children",
            broker="postgresql",
            peer=False,
        ),
        Config(
            name="flask-tasks-rabbitmq",
            library="flask-tasks",
            workers=[FLASK_TASKS_WORKER],
            description="flask worker -P prefork -c 2 -l WARNING "
            "(default prefetch: {prefetch} per child), "
            "TASKS_BROKER_URL = amqp://guest:guest@<server>/<vhost of the run>, "
            "TASKS_RESULT_BACKEND = the run's Redis, db 1",
            processes="1 supervisor + 2 forked children",
            broker="amqp",
            peer=False,
        ),
    ]
}


# -- knowing when a drain is done ------------------------------------------------------------


@dataclass
class Detector:
    """Polls one configuration's store; counts its own Redis traffic so that it can be
    subtracted from the server's statistics."""

    poll: Callable[[], bool]
    commands: Counter[str] = field(default_factory=Counter)
    round_trips: int = 0


def redis_counter_detector(client: Any, command: str, key: str | None, target: int) -> Detector:
    """Done when ``command`` on ``key`` (DBSIZE, ZCARD, HLEN...) reaches ``target``;
    ``target`` 0 means "falls to zero"."""
    detector = Detector(poll=lambda: False)
    args = [key] if key else []

    def poll() -> bool:
        detector.commands[command.lower()] += 1
        detector.round_trips += 1
        value = int(client.execute_command(command, *args))
        return value == 0 if target == 0 else value >= target

    detector.poll = poll
    return detector


class ResultTail:
    """Done when every task id sent has a final result record (Flask-Tasks, any broker).

    Each poll reads the records of the last ``tail`` ids only; once those are final it
    reads all the others (in chunks) and keeps polling the few still running.
    """

    def __init__(self, state: Any, ids: list[str], tail: int = 32) -> None:
        from flask_tasks import states

        self.state = state  # the app's Runtime
        self.ready = states.READY_STATES
        self.remaining = ids[-tail:]
        self.others = ids[:-tail]
        self.detector = Detector(poll=self.poll)

    def _unfinished(self, ids: list[str]) -> list[str]:
        from flask_tasks.records import Record

        unfinished = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            self.detector.commands["mget"] += 1
            self.detector.round_trips += 1
            for task_id, raw in zip(chunk, self.state.store.get_results(chunk)):
                record = Record.decode(self.state.codec, raw)
                if record is None or record.state not in self.ready:
                    unfinished.append(task_id)
        return unfinished

    def poll(self) -> bool:
        self.remaining = self._unfinished(self.remaining)
        if self.remaining:
            return False
        if self.others:
            self.remaining, self.others = self._unfinished(self.others), []
        return not self.remaining


def detector_for(
    config: Config, redis_url: str, count: int, ids_file: Path, ft_state: Any
) -> Detector:
    """How to tell that ``count`` tasks of ``config`` are done (results stored)."""
    import redis

    if config.library == "flask-tasks":
        return ResultTail(ft_state, json.loads(ids_file.read_text())).detector
    base = redis_url.rsplit("/", 1)[0]
    if config.library == "celery":  # results live alone in db 1, one key each
        return redis_counter_detector(redis.Redis.from_url(f"{base}/1"), "DBSIZE", None, count)
    client = redis.Redis.from_url(redis_url)
    if config.library == "rq":
        return redis_counter_detector(client, "ZCARD", "rq:finished:default", count)
    if config.library == "dramatiq":  # a message leaves .msgs when acked, after its result
        return redis_counter_detector(client, "HLEN", "dramatiq:default.msgs", 0)
    if config.library == "huey":
        return redis_counter_detector(client, "HLEN", "huey.results.bench", count)
    raise ValueError(config.library)
