"""Many concurrent ``watch_result`` waiters share one pub/sub connection (Redis)."""

from __future__ import annotations

import threading

from flask_tasks.brokers.redis import RedisBroker


def test_two_hundred_watchers_share_one_connection(redis_url: str, redis_client) -> None:
    broker = RedisBroker(redis_url, key_prefix="watchers")
    woken: list[bytes | None] = []
    ready = threading.Barrier(201, timeout=10)

    def watch(index: int) -> None:
        ready.wait()
        woken.append(broker.watch_result(f"task-{index % 10}", None, 10))

    threads = [threading.Thread(target=watch, args=(n,)) for n in range(200)]
    try:
        for thread in threads:
            thread.start()
        ready.wait()
        # The pool is far from exhausted: plain commands still work while all wait.
        assert broker.get_result("unrelated") is None
        clients = redis_client.client_list()
        assert len(clients) < 20, len(clients)
        for index in range(10):
            broker.set_result(f"task-{index}", b"done-%d" % index, 60)
        for thread in threads:
            thread.join(10)
        assert sorted(set(woken)) == [b"done-%d" % index for index in range(10)]
        assert len(woken) == 200
    finally:
        broker.close()
