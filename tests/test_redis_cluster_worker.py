"""Real ``flask worker`` processes on ``redis+cluster://`` (a three-master Redis Cluster):
the core flows, countdown, priorities, queues spread over every master, and SIGKILLs in
the middle of a stream of tasks over twelve queues (nothing lost).

Every test has a key prefix of its own on the session's cluster (``redis_cluster_url``).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from collections import Counter

import pytest
import redis
from flask import Flask
from process_flows import priorities_honoured, seed_flow
from process_helpers import WorkerProcesses, WorkerSetup, proc_app, wait_until
from redis.cluster import RedisCluster

from flask_tasks import states

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="signals process groups (POSIX)"),
]

RESULT_WAIT = 15.0
SOAK_TASKS = 300
SOAK_KILLS = 5
QUEUES = [f"q{index}" for index in range(12)]


@pytest.fixture
def worker_broker_url(redis_cluster_url: str) -> str:
    return redis_cluster_url


def _cluster(url: str) -> RedisCluster:
    host, port = url.split("://", 1)[1].split(",")[0].split(":")
    return RedisCluster(host=host, port=int(port))


def test_seed_flow_chain_group_chord_and_retries(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    seed_flow(setup, workers, "-c", "2", "-n", "cluster@test", "-Q", "default,spare")  # prefork


def test_countdown_never_runs_early(app: Flask, setup: WorkerSetup, workers: WorkerProcesses):
    workers.start("-P", "threads", "-c", "2", "-Q", "default,other")  # waits on two slots
    label = uuid.uuid4().hex
    sent_at = time.time()
    result = proc_app.record_run.apply_async((label, label), countdown=0.8)
    assert result.get(timeout=RESULT_WAIT) == label
    [line] = setup.records(label)
    assert line["time"] >= sent_at + 0.8
    quick = proc_app.add.apply_async((1, 2), queue="other")  # wakes the waiting worker
    assert quick.get(timeout=RESULT_WAIT) == 3


def test_priorities_are_honoured(setup: WorkerSetup, app: Flask, workers: WorkerProcesses) -> None:
    priorities_honoured(setup, workers)


def _produce(app: Flask, results: list, done: threading.Event) -> None:
    with app.app_context():
        for index in range(SOAK_TASKS):
            queue = QUEUES[index % len(QUEUES)]
            results.append(proc_app.counted.apply_async((index,), queue=queue))
            time.sleep(0.05)  # a stream of about 15 s, so that every kill lands inside it
    done.set()


def _keys_per_master(url: str, prefix: str) -> dict[str, int]:
    """Keys of the test's queues on each master (SCAN on every primary)."""
    cluster = _cluster(url)
    try:
        counts = {}
        for node in cluster.get_primaries():
            client: redis.Redis = cluster.get_redis_connection(node)
            counts[node.name] = sum(1 for _key in client.scan_iter(match=f"{{{prefix}:q*"))
        return counts
    finally:
        cluster.close()


def test_twelve_queues_sigkills_and_every_master_used(
    setup: WorkerSetup, workers: WorkerProcesses
) -> None:
    setup.visibility_timeout = 2.0
    # A fixed prefix (this test runs once per cluster): the slots of its twelve queues
    # are then known, 3, 5 and 4 on the three masters (redis-cli splits slots evenly).
    setup.key_prefix = "cluster-soak"
    app = setup.app()
    queues = ",".join(QUEUES)
    survivor = workers.start("-P", "threads", "-c", "4", "-Q", queues, "-n", "survivor@test")
    victim = workers.start("-P", "solo", "--prefetch", "2", "-Q", queues, "-n", "victim@test")
    results: list = []
    produced = threading.Event()
    threading.Thread(target=_produce, args=(app, results, produced), daemon=True).start()

    def runs() -> list[dict]:
        return setup.records("counted")

    cluster = _cluster(setup.broker_url)
    slots = {queue: cluster.keyslot(f"{{{setup.key_prefix}:{queue}}}") for queue in QUEUES}
    owners = {cluster.get_node_from_key(f"{{{setup.key_prefix}:{q}}}").name for q in QUEUES}
    cluster.close()
    assert len(set(slots.values())) == len(QUEUES)
    assert len(owners) == 3, f"twelve queues should spread over the three masters: {slots}"
    wait_until(lambda: len(runs()) >= 20, timeout=30, what="the first runs")
    per_master = _keys_per_master(setup.broker_url, setup.key_prefix)
    assert len(per_master) == 3
    assert {name for name, count in per_master.items() if count} == owners
    for kill in range(SOAK_KILLS):
        enough = (kill + 1) * SOAK_TASKS // 10
        wait_until(lambda n=enough: len(runs()) >= n, timeout=60, what=f"{enough} runs")
        victim.kill_group(signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
        assert not produced.is_set(), "killed too late to matter"
        victim = workers.start(
            "-P", "solo", "--prefetch", "2", "-Q", queues, "-n", f"victim{kill}@test"
        )
    assert produced.wait(60)
    with app.app_context():
        for result in results:  # the survivors finish everything, the victims' too
            assert result.get(timeout=60) is not None
        assert {result.state for result in results} == {states.SUCCESS}
    assert survivor.returncode() is None, survivor.describe()
    per_task = Counter(line["index"] for line in runs())
    assert set(per_task) == set(range(SOAK_TASKS)), "a task was lost"
    by_host = Counter(line["hostname"] for line in runs())
    assert sum(count for host, count in by_host.items() if host.startswith("victim")) > 0
    print(
        f"keys per master {per_master}; runs {len(runs())} {dict(by_host)}, tasks run "
        f"twice {sum(1 for count in per_task.values() if count > 1)}"
    )
    with app.app_context():
        broker = app.extensions["tasks"].transport
        assert all(broker.queue_length(queue) == 0 for queue in QUEUES)
        assert broker.dead_letters() == []
