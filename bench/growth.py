"""Figure 6, cost as work grows: the drain rate with a backlog already in the store.

The backlog is loaded through the broker's bulk publish (``Broker.publish`` with 5,000
envelopes a call; one Lua script run each on Redis), and its loading is not timed into any
figure. Half of it is delayed (eta one day ahead, queue ``default``), half is ready in
queue ``default`` at priority 9, behind the measured tasks (priority 5, the default): the
workers take the measured tasks first, so the figure shows what a deep store costs per task.
Between repetitions, ready backlog messages the workers took after the measured ones are
replaced.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable

from flask_tasks.brokers import Envelope

if TYPE_CHECKING:
    from bench.configs import Config
    from bench.harness import Bench

#: The id inside the template body, replaced by each backlog message's own id.
TEMPLATE_ID = "00000000-0000-4000-8000-000000000000"
PUBLISH_BATCH = 5000
BACKLOG_PRIORITY = 9
DELAY_SECONDS = 86_400


def body_maker(state: Any) -> Callable[[str], bytes]:
    """A function giving a real encoded ``bench.noop`` message body for an id."""
    options = state.options_for("bench.noop")
    message = state.producer.message("bench.noop", (), {}, {"task_id": TEMPLATE_ID}, options)
    body = state.producer.encode(message)
    if state.codec.signs:
        raise RuntimeError("the bench app must not sign messages (ids are patched into bodies)")
    template = TEMPLATE_ID.encode()
    return lambda message_id: body.replace(template, message_id.encode())


class Backlog:
    """Loads and tops up the backlog of one store."""

    def __init__(self, state: Any, size: int) -> None:
        self.broker = state.transport
        self.make_body = body_maker(state)
        self.ready = size // 2
        self.delayed = size - self.ready
        self.numbers = itertools.count()

    def _publish(self, count: int, delayed: bool) -> None:
        eta = time.time() + DELAY_SECONDS if delayed else None
        priority = 5 if delayed else BACKLOG_PRIORITY
        kind = "delayed" if delayed else "ready"
        for start in range(0, count, PUBLISH_BATCH):
            ids = [
                f"backlog-{kind}-{next(self.numbers)}"
                for _ in range(min(PUBLISH_BATCH, count - start))
            ]
            self.broker.publish(
                [Envelope(i, "default", self.make_body(i), priority, eta) for i in ids]
            )

    def load(self) -> float:
        started = time.perf_counter()
        self._publish(self.delayed, delayed=True)
        self._publish(self.ready, delayed=False)
        return time.perf_counter() - started

    def top_up(self) -> int:
        """Replace the ready backlog messages that workers took; returns how many."""
        missing = self.ready - self.broker.queue_length("default")
        if missing > 0:
            self._publish(missing, delayed=False)
        return max(0, missing)


def measure_growth(bench: Bench, config: Config) -> dict[str, Any]:
    """Drain rates of N tasks over each backlog size.

    Every backlog is loaded first, each under a key prefix of its own on the same server
    (SQLite: a file of its own); then the repetitions alternate between the sizes, so that
    noise on the machine falls on every size alike.
    """
    if config.broker == "sqlite":
        raise ValueError("figure 6 runs on Redis (the SQLite broker would need a file per size)")
    bench.redis.flushall()
    sizes = bench.options.growth
    states, records, backlogs = {}, {}, {}
    for size in sizes:
        prefix = f"bench-growth-{size}"
        states[size] = bench.create_app(bench.redis_url, prefix).extensions["tasks"]
        backlogs[size] = Backlog(states[size], size)
        record: dict[str, Any] = defaultdict(list)
        record["preload_seconds"] = backlogs[size].load()
        record["backlog"] = {"ready": backlogs[size].ready, "delayed": backlogs[size].delayed}
        records[size] = record
    records[sizes[-1]]["redis_used_memory"] = bench.redis.info("memory")["used_memory"]
    try:
        for rep in range(bench.options.growth_repeat):
            for size in sizes:
                _one_drain(bench, config, states[size], backlogs[size], records[size], size, rep)
    finally:
        for state in states.values():
            state.close()
    return {str(size): dict(record) for size, record in records.items()}


def _one_drain(
    bench: Bench, config: Config, state: Any, backlog: Backlog, record: Any, size: int, rep: int
) -> None:
    record["topped_up"].append(backlog.top_up())
    env = dict(bench.env(bench.redis_url), BENCH_FT_PREFIX=state.config.key_prefix)
    ids_file = bench.options.logs / f"growth-{config.name}-{size}-ids.json"
    log = bench.log(config, f"growth{size}", rep)
    enqueued, _work = bench.produce(config, "enqueue", env, log, ids_file)
    drained = bench.drain(config, env, log, ids_file, state, bench.options.n)
    record["enqueue"].append(enqueued["rate"])
    record["drain"].append(drained["rate"])
    record["drain_redis"].append(drained["redis"])
    print(
        f"[bench] growth {config.name} backlog {size:,} rep {rep + 1}: "
        f"{drained['rate']:.0f} tasks/s",
        flush=True,
    )
