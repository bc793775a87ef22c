"""The broker contract, part 2: result records, watching them, revocation, counters."""

from __future__ import annotations

import threading
import time

from contract_helpers import Background

from flask_tasks.brokers import Broker, Envelope

SHORT = 0.2  # a time to live that a test waits out


# -- result records ----------------------------------------------------------------------


def test_set_get_overwrite_forget(broker: Broker) -> None:
    assert broker.get_result("t") is None
    broker.set_result("t", b"PENDING", 60)
    assert broker.get_result("t") == b"PENDING"
    broker.set_result("t", b"\x00SUCCESS\xff", 60)
    assert broker.get_result("t") == b"\x00SUCCESS\xff"
    broker.forget_result("t")
    assert broker.get_result("t") is None
    broker.forget_result("never-stored")


def test_get_results_in_order_with_gaps(broker: Broker) -> None:
    broker.set_result("a", b"A", 60)
    broker.set_result("c", b"C", 60)
    assert broker.get_results(["c", "b", "a", "c"]) == [b"C", None, b"A", b"C"]
    assert broker.get_results([]) == []
    many = [f"t{i}" for i in range(1200)]
    for task_id in many[::100]:
        broker.set_result(task_id, task_id.encode(), 60)
    found = broker.get_results(many)
    assert found == [t.encode() if i % 100 == 0 else None for i, t in enumerate(many)]


def test_result_expires_after_its_ttl_and_zero_means_forever(broker: Broker) -> None:
    broker.set_result("short", b"x", SHORT)
    broker.set_result("forever", b"y", 0)
    assert broker.get_result("short") == b"x"
    time.sleep(SHORT + 0.1)
    assert broker.get_result("short") is None
    assert broker.get_results(["short", "forever"]) == [None, b"y"]


def test_writing_again_resets_the_ttl(broker: Broker) -> None:
    broker.set_result("t", b"first", SHORT)
    broker.set_result("t", b"second", 0)
    time.sleep(SHORT + 0.1)
    assert broker.get_result("t") == b"second"


def test_publish_records_pending_results_atomically(broker: Broker) -> None:
    broker.publish(
        [Envelope("a", "q", b"1"), Envelope("b", "q", b"2")],
        records={"a": b"PENDING-a", "b": b"PENDING-b"},
        record_ttl=60,
    )
    assert broker.get_results(["a", "b"]) == [b"PENDING-a", b"PENDING-b"]
    broker.publish([Envelope("c", "q", b"3")], records={}, record_ttl=60)
    assert broker.get_result("c") is None


def test_publish_record_ttl(broker: Broker) -> None:
    broker.publish([Envelope("a", "q", b"1")], records={"a": b"PENDING"}, record_ttl=SHORT)
    broker.publish([Envelope("b", "q", b"1")], records={"b": b"PENDING"})
    time.sleep(SHORT + 0.1)
    assert broker.get_result("a") is None
    assert broker.get_result("b") == b"PENDING"  # default ttl 0: kept
    assert broker.queue_length("q") == 2  # the messages do not expire with the records


def test_ack_and_release_record_ttl(broker: Broker) -> None:
    broker.publish([Envelope("a", "q", b"1"), Envelope("b", "q", b"2")])
    broker.reserve(["q"], 2, 30)
    broker.ack("a", b"SUCCESS", SHORT)
    broker.release("b", record=b"RETRY", record_ttl=SHORT)
    assert broker.get_results(["a", "b"]) == [b"SUCCESS", b"RETRY"]
    time.sleep(SHORT + 0.1)
    assert broker.get_results(["a", "b"]) == [None, None]


# -- watching a record -------------------------------------------------------------------


def test_watch_returns_at_once_when_different(broker: Broker) -> None:
    broker.set_result("t", b"STARTED", 60)
    started = time.monotonic()
    assert broker.watch_result("t", None, 10) == b"STARTED"
    assert broker.watch_result("t", b"PENDING", 10) == b"STARTED"
    assert broker.watch_result("missing", b"PENDING", 10) is None
    assert time.monotonic() - started < 2


def test_watch_returns_after_timeout_when_unchanged(broker: Broker) -> None:
    broker.set_result("t", b"PENDING", 60)
    started = time.monotonic()
    assert broker.watch_result("t", b"PENDING", SHORT) == b"PENDING"
    assert broker.watch_result("missing", None, 0.1) is None
    elapsed = time.monotonic() - started
    assert SHORT <= elapsed < SHORT + 2


def test_watch_wakes_when_another_thread_writes(broker: Broker) -> None:
    broker.set_result("t", b"PENDING", 60)
    watcher = Background(lambda: broker.watch_result("t", b"PENDING", 20))
    time.sleep(0.1)
    broker.set_result("t", b"SUCCESS", 60)
    written_at = time.monotonic()
    assert watcher.result() == b"SUCCESS"
    assert watcher.finished_at is not None and watcher.finished_at - written_at < 2


def test_watch_wakes_on_ack_publish_and_forget(broker: Broker) -> None:
    broker.publish([Envelope("t", "q", b"1")])
    broker.reserve(["q"], 1, 30)
    watcher = Background(lambda: broker.watch_result("t", None, 20))
    time.sleep(0.1)
    broker.ack("t", b"SUCCESS", 60)
    assert watcher.result() == b"SUCCESS"

    watcher = Background(lambda: broker.watch_result("u", None, 20))
    time.sleep(0.1)
    broker.publish([Envelope("u", "q", b"1")], records={"u": b"PENDING"})
    assert watcher.result() == b"PENDING"

    watcher = Background(lambda: broker.watch_result("u", b"PENDING", 20))
    time.sleep(0.1)
    broker.forget_result("u")
    assert watcher.result() is None


def test_watch_ignores_other_records(broker: Broker) -> None:
    broker.set_result("t", b"PENDING", 60)
    watcher = Background(lambda: broker.watch_result("t", b"PENDING", 0.3))
    for i in range(5):
        time.sleep(0.02)
        broker.set_result(f"other-{i}", b"SUCCESS", 60)
    assert watcher.result() == b"PENDING"


def test_watch_wakes_for_a_write_through_another_connection(
    broker: Broker, other_broker: Broker
) -> None:
    broker.set_result("t", b"PENDING", 60)
    watcher = Background(lambda: broker.watch_result("t", b"PENDING", 20))
    time.sleep(0.1)
    other_broker.set_result("t", b"SUCCESS", 60)
    written_at = time.monotonic()
    assert watcher.result() == b"SUCCESS"
    assert watcher.finished_at is not None and watcher.finished_at - written_at < 2


# -- revocation and counters -------------------------------------------------------------


def test_revoke_marks_for_ttl(broker: Broker) -> None:
    assert broker.revoked(["a", "b"]) == set()
    broker.revoke(["a", "b"], SHORT)
    broker.revoke(["c"], 60)
    broker.revoke([], 60)
    assert broker.revoked(["a", "b", "c", "d"]) == {"a", "b", "c"}
    assert broker.revoked([]) == set()
    time.sleep(SHORT + 0.1)
    assert broker.revoked(["a", "b", "c", "d"]) == {"c"}


def test_incr_counts_from_one_per_key(broker: Broker) -> None:
    assert [broker.incr("chord-1", 60) for _ in range(3)] == [1, 2, 3]
    assert broker.incr("chord-2", 60) == 1
    assert broker.incr("chord-1", 60) == 4


def test_incr_expires_after_ttl(broker: Broker) -> None:
    assert broker.incr("k", SHORT) == 1
    assert broker.incr("k", SHORT) == 2
    time.sleep(SHORT + 0.1)
    assert broker.incr("k", 60) == 1


def test_incr_is_atomic_across_threads(broker: Broker) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def count() -> None:
        for _ in range(25):
            value = broker.incr("k", 60)
            with lock:
                seen.append(value)

    workers = [Background(count) for _ in range(4)]
    for worker in workers:
        worker.result()
    assert sorted(seen) == list(range(1, 101))


def test_reserve_flags_revoked_deliveries(broker: Broker) -> None:
    broker.publish([Envelope(name, "q", b"x") for name in ("kept", "revoked", "lapsed")])
    broker.revoke(["revoked"], 60)
    broker.revoke(["lapsed"], 0.05)
    time.sleep(0.1)
    flags = {delivery.id: delivery.revoked for delivery in broker.reserve(["q"], 3, 30)}
    assert flags == {"kept": False, "revoked": True, "lapsed": False}
