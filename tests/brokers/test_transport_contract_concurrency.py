"""The transport contract, part 2: waiting for work, and many consumers at once.

Timing assertions use generous upper bounds (seconds, not milliseconds): they catch a
missed wake-up, which would wait for the whole timeout, without flaking on a busy machine.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter

import pytest
from contract_helpers import BackendSpec, Background, consume_until_idle

from flask_tasks.brokers import Envelope, Store, Transport

LONG = 20.0  # a timeout that a passing test never waits out


def envelopes(count: int, queue: str = "q", eta: float | None = None) -> list[Envelope]:
    return [Envelope(f"m{i}", queue, b"x", i % 10, eta) for i in range(count)]


# -- wait --------------------------------------------------------------------------------


def test_wait_returns_at_once_when_work_is_ready(transport: Transport) -> None:
    transport.publish(envelopes(1))
    started = time.monotonic()
    transport.wait(["other", "q"], LONG)
    assert time.monotonic() - started < 2


def test_wait_wakes_promptly_on_publish_from_another_thread(transport: Transport) -> None:
    waiter = Background(lambda: transport.wait(["q"], LONG))
    time.sleep(0.1)
    transport.publish(envelopes(1))
    published_at = time.monotonic()
    waiter.result()
    assert waiter.finished_at is not None and waiter.finished_at - published_at < 2


def test_wait_wakes_for_a_publish_through_another_connection(
    transport: Transport, other_transport: Transport
) -> None:
    waiter = Background(lambda: transport.wait(["q"], LONG))
    time.sleep(0.1)
    other_transport.publish(envelopes(1))
    published_at = time.monotonic()
    waiter.result()
    assert waiter.finished_at is not None and waiter.finished_at - published_at < 2
    assert [d.id for d in transport.reserve(["q"], 5, 30)] == ["m0"]


def test_wait_returns_when_a_delayed_message_falls_due(transport: Transport) -> None:
    eta = time.time() + 0.3
    transport.publish(envelopes(1, eta=eta))
    started = time.monotonic()
    deliveries: list[object] = []
    while not deliveries and time.monotonic() - started < 5:
        transport.wait(["q"], LONG)
        deliveries = list(transport.reserve(["q"], 1, 30))
    assert deliveries, "the delayed message never became ready"
    assert time.time() >= eta
    assert time.monotonic() - started < 0.3 + 2


def test_wait_returns_after_timeout_when_idle(transport: Transport) -> None:
    started = time.monotonic()
    transport.wait(["q"], 0.3)
    transport.wait([], 0.1)
    assert time.monotonic() - started < 0.4 + 2


def test_wait_does_not_busy_poll_when_idle(transport: Transport) -> None:
    transport.publish(envelopes(1, queue="elsewhere"))
    if isinstance(transport, Store):  # a record written is no work for a consumer
        transport.set_result("t", b"x", 60)
    calls = 0
    deadline = time.monotonic() + 0.4
    while time.monotonic() < deadline:
        transport.wait(["q"], 0.2)
        transport.reserve(["q"], 1, 30)
        calls += 1
    assert calls < 15, f"wait() returned {calls} times in 0.4 s with nothing to do"


# -- many consumers ----------------------------------------------------------------------


def _consume_in_threads(transport: Transport, threads: int, expected: int) -> Counter[str]:
    taken: Counter[str] = Counter()
    lock = threading.Lock()

    def consume() -> None:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 0.5:
            deliveries = transport.reserve(["q"], 3, 30)
            if not deliveries:
                with lock:
                    if sum(taken.values()) >= expected:
                        return
                transport.wait(["q"], 0.05)
                continue
            quiet_since = time.monotonic()
            with lock:
                taken.update(d.id for d in deliveries)
            transport.ack([delivery.id for delivery in deliveries])

    workers = [Background(consume) for _ in range(threads)]
    for worker in workers:
        worker.result(timeout=30)
    return taken


def test_threads_share_a_queue_each_message_once(transport: Transport) -> None:
    transport.publish(envelopes(300))
    taken = _consume_in_threads(transport, threads=4, expected=300)
    assert len(taken) == 300
    assert max(taken.values()) == 1


def test_threads_take_due_delayed_messages_once(transport: Transport) -> None:
    transport.publish(envelopes(60, eta=time.time() + 0.2))
    taken = _consume_in_threads(transport, threads=4, expected=60)
    assert len(taken) == 60
    assert max(taken.values()) == 1


def test_threads_recover_expired_leases_once(transport: Transport) -> None:
    transport.publish(envelopes(40))
    assert len(transport.reserve(["q"], 40, 0.2)) == 40  # a consumer that dies holding them
    time.sleep(0.3)
    taken = _consume_in_threads(transport, threads=4, expected=40)
    assert len(taken) == 40
    assert max(taken.values()) == 1


def test_processes_share_a_queue_each_message_once(transport_spec: BackendSpec) -> None:
    if not transport_spec.shared:
        pytest.skip(f"{transport_spec.kind}:// transports live in one process")
    publisher = transport_spec.open_transport()
    publisher.publish(envelopes(300))
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        pending = [
            pool.apply_async(
                consume_until_idle,
                (transport_spec.opener, transport_spec.url, transport_spec.key_prefix, "q", 0.5),
            )
            for _ in range(3)
        ]
        results = [result.get(timeout=60) for result in pending]
    taken = Counter(message_id for ids in results for message_id in ids)
    assert len(taken) == 300
    assert max(taken.values()) == 1
    assert publisher.queue_length("q") == 0
