"""The producer side of one library, run by the harness in its own process.

    python -m bench.client LIBRARY ACTION [--n N] [--ids-out FILE]

LIBRARY is ``flask-tasks``, ``celery``, ``rq``, ``dramatiq`` or ``huey``; ACTION is

``enqueue``    send N no-op tasks one call at a time (``delay()`` or the library's equal);
``bulk``       send N no-op tasks through the library's bulk path (Flask-Tasks ``group``,
               RQ ``enqueue_many``, Celery ``group``);
``roundtrip``  send one probe and wait for its result, then N sequential ``delay().get()``.

The process imports its library, prints ``ready`` and waits for a line on stdin, so that
the harness can reset the Redis statistics (and start workers) at the right moment
without counting the import. It answers with one JSON line. For ``roundtrip`` it prints
``probe <unix time>`` once the first result came back and waits for another line (the
harness measures idle worker memory meanwhile) before the timed calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

#: Calls made before the timed round trips (connections, first-use imports, caches).
WARMUP_CALLS = 20
#: Longest wait for one result, seconds.
RESULT_TIMEOUT = 60


class Producer:
    """How one library sends a no-op task and waits for its result."""

    def send(self) -> Any:
        raise NotImplementedError

    def wait(self, handle: Any) -> None:
        raise NotImplementedError

    def bulk(self, count: int) -> list[Any]:
        raise NotImplementedError(f"{type(self).__name__} has no bulk path in this benchmark")

    def task_id(self, handle: Any) -> str:
        return str(handle.id)

    def close(self) -> None:
        """Release what the producer holds (an app context)."""


class FlaskTasksProducer(Producer):
    def __init__(self) -> None:
        from bench.apps.ft_app import app, noop, queues

        self.noop = noop
        self.context = app.app_context()
        self.context.push()
        #: BENCH_FT_QUEUES > 1: the tasks go to the queues in turn (q0, q1, ...).
        self.queues = queues()
        self.sent = 0

    def _queue(self) -> str:
        self.sent += 1
        return self.queues[self.sent % len(self.queues)]

    def send(self) -> Any:
        if self.queues:
            return self.noop.apply_async(queue=self._queue())
        return self.noop.delay()

    def wait(self, handle: Any) -> None:
        handle.get(timeout=RESULT_TIMEOUT)

    def bulk(self, count: int) -> list[Any]:
        from flask_tasks import group

        if self.queues:
            signatures = (self.noop.s().set(queue=self._queue()) for _ in range(count))
        else:
            signatures = (self.noop.s() for _ in range(count))
        return list(group(signatures).apply_async().results)

    def close(self) -> None:
        self.context.pop()


class CeleryProducer(Producer):
    def __init__(self) -> None:
        from bench.apps.celery_app import noop

        self.noop = noop

    def send(self) -> Any:
        return self.noop.delay()

    def wait(self, handle: Any) -> None:
        handle.get(timeout=RESULT_TIMEOUT)

    def bulk(self, count: int) -> list[Any]:
        from celery import group

        return list(group(self.noop.s() for _ in range(count)).apply_async().results)


class RQProducer(Producer):
    def __init__(self) -> None:
        from redis import Redis
        from rq import Queue

        from bench.apps.rq_tasks import noop

        self.noop = noop
        self.queue = Queue("default", connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]))

    def send(self) -> Any:
        return self.queue.enqueue(self.noop)

    def wait(self, handle: Any) -> None:
        if handle.latest_result(timeout=RESULT_TIMEOUT) is None:
            raise TimeoutError(f"no result for RQ job {handle.id}")

    def bulk(self, count: int) -> list[Any]:
        jobs = [self.queue.prepare_data(self.noop) for _ in range(count)]
        return list(self.queue.enqueue_many(jobs))


class DramatiqProducer(Producer):
    def __init__(self) -> None:
        from bench.apps.dramatiq_app import noop

        self.noop = noop

    def send(self) -> Any:
        return self.noop.send()

    def wait(self, handle: Any) -> None:
        handle.get_result(block=True, timeout=RESULT_TIMEOUT * 1000)

    def task_id(self, handle: Any) -> str:
        return str(handle.message_id)


class HueyProducer(Producer):
    def __init__(self) -> None:
        from bench.apps.huey_app import noop

        self.noop = noop

    def send(self) -> Any:
        return self.noop()

    def wait(self, handle: Any) -> None:
        handle.get(blocking=True, timeout=RESULT_TIMEOUT)


PRODUCERS: dict[str, Callable[[], Producer]] = {
    "flask-tasks": FlaskTasksProducer,
    "celery": CeleryProducer,
    "rq": RQProducer,
    "dramatiq": DramatiqProducer,
    "huey": HueyProducer,
}


def enqueue(producer: Producer, count: int) -> tuple[dict[str, Any], list[Any]]:
    started = time.perf_counter()
    handles = [producer.send() for _ in range(count)]
    elapsed = time.perf_counter() - started
    return {"count": count, "seconds": elapsed, "rate": count / elapsed}, handles


def bulk(producer: Producer, count: int) -> tuple[dict[str, Any], list[Any]]:
    started = time.perf_counter()
    handles = producer.bulk(count)
    elapsed = time.perf_counter() - started
    assert len(handles) == count, (len(handles), count)
    return {"count": count, "seconds": elapsed, "rate": count / elapsed}, handles


def roundtrip(producer: Producer, count: int) -> dict[str, Any]:
    producer.wait(producer.send())  # queued before the workers start: the start-up probe
    print(f"probe {time.time():.6f}", flush=True)
    sys.stdin.readline()
    for _ in range(WARMUP_CALLS):
        producer.wait(producer.send())
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        producer.wait(producer.send())
        samples.append((time.perf_counter() - started) * 1000)
    return {"count": count, "milliseconds": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("library", choices=sorted(PRODUCERS))
    parser.add_argument("action", choices=["enqueue", "bulk", "roundtrip"])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--ids-out", help="write the task ids sent (JSON list) to this file")
    options = parser.parse_args(argv)
    producer = PRODUCERS[options.library]()
    print("ready", flush=True)
    sys.stdin.readline()
    handles: list[Any] = []
    if options.action == "enqueue":
        outcome, handles = enqueue(producer, options.n)
    elif options.action == "bulk":
        outcome, handles = bulk(producer, options.n)
    else:
        outcome = roundtrip(producer, options.n)
    if options.ids_out:
        with open(options.ids_out, "w") as file:
            json.dump([producer.task_id(handle) for handle in handles], file)
    producer.close()
    if "flask_tasks" in sys.modules:  # which copy ran (the harness checks it)
        outcome["flask_tasks"] = sys.modules["flask_tasks"].__file__
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
