"""The store contract: result records and watching them, revocation (with and without
terminate), counters, claims, worker heartbeats.

Every test runs on every store (``STORES`` in ``conftest.py``). The contract is the
docstrings of ``flask_tasks.brokers.base.Store``.
"""

from __future__ import annotations

import functools
import multiprocessing
import threading
import time

import pytest
from contract_helpers import BackendSpec, Background, claim_in_process

from flask_tasks.brokers import Store

SHORT = 0.2  # a time to live that a test waits out


def test_identity(store: Store) -> None:
    assert isinstance(store.kind, str) and store.kind
    assert isinstance(store.url, str) and store.url
    store.ping()
    assert abs(store.now() - time.time()) < 1


# -- result records ----------------------------------------------------------------------


def test_set_get_overwrite_forget(store: Store) -> None:
    assert store.get_result("t") is None
    store.set_result("t", b"PENDING", 60)
    assert store.get_result("t") == b"PENDING"
    store.set_result("t", b"\x00SUCCESS\xff", 60)
    assert store.get_result("t") == b"\x00SUCCESS\xff"
    store.forget_result("t")
    assert store.get_result("t") is None
    store.forget_result("never-stored")


def test_get_results_in_order_with_gaps(store: Store) -> None:
    store.set_result("a", b"A", 60)
    store.set_result("c", b"C", 60)
    assert store.get_results(["c", "b", "a", "c"]) == [b"C", None, b"A", b"C"]
    assert store.get_results([]) == []
    many = [f"t{i}" for i in range(1200)]
    for task_id in many[::100]:
        store.set_result(task_id, task_id.encode(), 60)
    found = store.get_results(many)
    assert found == [t.encode() if i % 100 == 0 else None for i, t in enumerate(many)]


def test_result_expires_after_its_ttl_and_zero_means_forever(store: Store) -> None:
    store.set_result("short", b"x", SHORT)
    store.set_result("forever", b"y", 0)
    assert store.get_result("short") == b"x"
    time.sleep(SHORT + 0.1)
    assert store.get_result("short") is None
    assert store.get_results(["short", "forever"]) == [None, b"y"]


def test_writing_again_resets_the_ttl(store: Store) -> None:
    store.set_result("t", b"first", SHORT)
    store.set_result("t", b"second", 0)
    time.sleep(SHORT + 0.1)
    assert store.get_result("t") == b"second"


def test_set_results_stores_each(store: Store) -> None:
    store.set_results({"a": b"A", "b": b"\x00B\xff"}, 60)
    store.set_results({"c": b"C"}, 60)
    store.set_results({}, 60)
    assert store.get_results(["a", "b", "c", "d"]) == [b"A", b"\x00B\xff", b"C", None]
    store.set_results({"a": b"A2", "d": b"D"}, 0)
    assert store.get_results(["a", "d"]) == [b"A2", b"D"]


def test_set_results_ttl(store: Store) -> None:
    store.set_results({"a": b"A", "b": b"B"}, SHORT)
    store.set_results({"c": b"C"}, 0)
    assert store.get_results(["a", "b", "c"]) == [b"A", b"B", b"C"]
    time.sleep(SHORT + 0.1)
    assert store.get_results(["a", "b", "c"]) == [None, None, b"C"]


def test_many_set_results_at_once(store: Store) -> None:
    records = {f"t{i}": f"record {i}".encode() for i in range(1200)}
    store.set_results(records, 60)
    assert store.get_results(list(records)) == list(records.values())


# -- watching a record -------------------------------------------------------------------


def test_watch_returns_at_once_when_different(store: Store) -> None:
    store.set_result("t", b"STARTED", 60)
    started = time.monotonic()
    assert store.watch_result("t", None, 10) == b"STARTED"
    assert store.watch_result("t", b"PENDING", 10) == b"STARTED"
    assert store.watch_result("missing", b"PENDING", 10) is None
    assert time.monotonic() - started < 2


def test_watch_returns_after_timeout_when_unchanged(store: Store) -> None:
    store.set_result("t", b"PENDING", 60)
    started = time.monotonic()
    assert store.watch_result("t", b"PENDING", SHORT) == b"PENDING"
    assert store.watch_result("missing", None, 0.1) is None
    elapsed = time.monotonic() - started
    assert SHORT <= elapsed < SHORT + 2


def test_watch_wakes_when_another_thread_writes(store: Store) -> None:
    store.set_result("t", b"PENDING", 60)
    watcher = Background(lambda: store.watch_result("t", b"PENDING", 20))
    time.sleep(0.1)
    store.set_result("t", b"SUCCESS", 60)
    written_at = time.monotonic()
    assert watcher.result() == b"SUCCESS"
    assert watcher.finished_at is not None and watcher.finished_at - written_at < 2


def test_watch_wakes_on_set_results_and_forget(store: Store) -> None:
    watcher = Background(lambda: store.watch_result("u", None, 20))
    time.sleep(0.1)
    store.set_results({"other": b"x", "u": b"PENDING"}, 60)
    assert watcher.result() == b"PENDING"

    watcher = Background(lambda: store.watch_result("u", b"PENDING", 20))
    time.sleep(0.1)
    store.forget_result("u")
    assert watcher.result() is None


def test_watch_ignores_other_records(store: Store) -> None:
    store.set_result("t", b"PENDING", 60)
    watcher = Background(lambda: store.watch_result("t", b"PENDING", 0.3))
    for i in range(5):
        time.sleep(0.02)
        store.set_result(f"other-{i}", b"SUCCESS", 60)
    assert watcher.result() == b"PENDING"


def test_watch_wakes_for_a_write_through_another_connection(
    store: Store, other_store: Store
) -> None:
    store.set_result("t", b"PENDING", 60)
    watcher = Background(lambda: store.watch_result("t", b"PENDING", 20))
    time.sleep(0.1)
    other_store.set_result("t", b"SUCCESS", 60)
    written_at = time.monotonic()
    assert watcher.result() == b"SUCCESS"
    assert watcher.finished_at is not None and watcher.finished_at - written_at < 2


# -- revocation --------------------------------------------------------------------------


def test_revoke_marks_for_ttl(store: Store) -> None:
    assert store.revoked(["a", "b"]) == set()
    store.revoke(["a", "b"], SHORT)
    store.revoke(["c"], 60)
    store.revoke([], 60)
    assert store.revoked(["a", "b", "c", "d"]) == {"a", "b", "c"}
    assert store.revoked([]) == set()
    time.sleep(SHORT + 0.1)
    assert store.revoked(["a", "b", "c", "d"]) == {"c"}


def test_revoke_with_terminate_marks_both(store: Store) -> None:
    store.revoke(["a", "b"], 60, terminate=True)
    store.revoke(["c"], 60)
    store.revoke(["d"], 60, terminate=False)
    assert store.revoked(["a", "b", "c", "d", "e"]) == {"a", "b", "c", "d"}
    assert store.terminating(["a", "b", "c", "d", "e"]) == {"a", "b"}
    assert store.terminating([]) == set()
    store.revoke([], 60, terminate=True)


def test_terminate_marks_expire_with_their_ttl(store: Store) -> None:
    store.revoke(["short"], SHORT, terminate=True)
    store.revoke(["long"], 60, terminate=True)
    assert store.terminating(["short", "long"]) == {"short", "long"}
    time.sleep(SHORT + 0.1)
    assert store.terminating(["short", "long"]) == {"long"}
    assert store.revoked(["short", "long"]) == {"long"}


def test_revoking_again_never_withdraws_terminate(store: Store) -> None:
    store.revoke(["t"], 60, terminate=True)
    store.revoke(["t"], 60)
    assert store.terminating(["t"]) == {"t"}
    assert store.revoked(["t"]) == {"t"}
    store.revoke(["u"], 60)
    store.revoke(["u"], 60, terminate=True)  # a later terminate upgrades a revocation
    assert store.terminating(["u"]) == {"u"}


def test_revocations_are_seen_through_another_connection(store: Store, other_store: Store) -> None:
    store.revoke(["a"], 60)
    store.revoke(["b"], 60, terminate=True)
    assert other_store.revoked(["a", "b", "c"]) == {"a", "b"}
    assert other_store.terminating(["a", "b", "c"]) == {"b"}


def test_many_revocations_at_once(store: Store) -> None:
    many = [f"t{i}" for i in range(1200)]
    store.revoke(many[::2], 60, terminate=True)
    store.revoke(many[1::2], 60)
    assert store.revoked(many) == set(many)
    assert store.terminating(many) == set(many[::2])


# -- counters ------------------------------------------------------------------------------


def test_incr_counts_from_one_per_key(store: Store) -> None:
    assert [store.incr("chord-1", 60) for _ in range(3)] == [1, 2, 3]
    assert store.incr("chord-2", 60) == 1
    assert store.incr("chord-1", 60) == 4


def test_incr_expires_after_ttl(store: Store) -> None:
    assert store.incr("k", SHORT) == 1
    assert store.incr("k", SHORT) == 2
    time.sleep(SHORT + 0.1)
    assert store.incr("k", 60) == 1


def test_incr_is_atomic_across_threads(store: Store) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def count() -> None:
        for _ in range(25):
            value = store.incr("k", 60)
            with lock:
                seen.append(value)

    workers = [Background(count) for _ in range(4)]
    for worker in workers:
        worker.result()
    assert sorted(seen) == list(range(1, 101))


def test_incr_is_shared_between_connections(store: Store, other_store: Store) -> None:
    assert store.incr("k", 60) == 1
    assert other_store.incr("k", 60) == 2
    assert store.incr("k", 60) == 3


# -- claims --------------------------------------------------------------------------------


def test_claim_first_caller_wins_until_the_ttl_runs_out(store: Store) -> None:
    assert store.claim("beat:every-minute:1700000000", SHORT) is True
    assert store.claim("beat:every-minute:1700000000", SHORT) is False
    assert store.claim("beat:every-minute:1700000060", SHORT) is True
    time.sleep(SHORT + 0.1)
    assert store.claim("beat:every-minute:1700000000", 60) is True
    assert store.claim("beat:every-minute:1700000000", 60) is False


def test_claim_keys_are_apart_from_counters(store: Store) -> None:
    assert store.incr("k", 60) == 1
    assert store.claim("k", 60) is True
    assert store.incr("k", 60) == 2


def _claim_at_once(store: Store, start: threading.Barrier, key: str) -> bool:
    start.wait()
    return store.claim(key, 60)


def test_claim_race_between_threads_has_one_winner(store_spec: BackendSpec) -> None:
    """Eight threads over two connections (one where connections do not share data)."""
    first = store_spec.open_store()
    second = store_spec.open_store() if store_spec.shared else first
    for round_number in range(5):
        start = threading.Barrier(8, timeout=10)
        racers = [
            Background(
                functools.partial(_claim_at_once, (first, second)[i % 2], start, f"r{round_number}")
            )
            for i in range(8)
        ]
        outcomes = [racer.result() for racer in racers]
        assert outcomes.count(True) == 1, outcomes


def test_claim_race_between_processes_has_one_winner(store_spec: BackendSpec) -> None:
    if not store_spec.shared:
        pytest.skip(f"{store_spec.kind}:// lives in one process: the thread race covers it")
    store_spec.open_store().ping()  # creates the file or loads the scripts first
    start_at = time.time() + 1.0
    args = (store_spec.opener, store_spec.url, store_spec.key_prefix, "beat:x", start_at)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = pool.starmap(claim_in_process, [args] * 4)
    assert outcomes.count(True) == 1, outcomes


# -- fencing of records ---------------------------------------------------------------------


def test_a_fenced_record_is_refused_unless_its_lease_holds_the_fence(store: Store) -> None:
    assert store.fences_records
    # No fence yet (the first lease): written.
    assert store.set_results_fenced({"t": (b"first", "lease-1")}, 60) == []
    store.fence("t", "lease-2", 60)  # another worker took the message over
    refused = store.set_results_fenced({"t": (b"stale", "lease-1"), "u": (b"U", "x")}, 60)
    assert refused == ["t"]
    assert store.get_results(["t", "u"]) == [b"first", b"U"]
    assert store.set_results_fenced({"t": (b"taken over", "lease-2")}, 60) == []
    assert store.get_result("t") == b"taken over"
    # "" (a new message under the id, its PENDING record): written, and the fence is gone.
    assert store.set_results_fenced({"t": (b"PENDING", "")}, 60) == []
    assert store.get_result("t") == b"PENDING"
    assert store.set_results_fenced({"t": (b"new lease", "lease-3")}, 60) == []
    assert store.get_result("t") == b"new lease"
    store.fence("short", "lease-2", SHORT)
    time.sleep(SHORT + 0.1)  # a fence expires with its time to live
    assert store.set_results_fenced({"short": (b"late", "lease-1")}, 60) == []


# -- heartbeats ----------------------------------------------------------------------------


def test_heartbeats_list_live_workers_with_their_info(store: Store) -> None:
    assert store.workers() == {}
    store.heartbeat("celery@host-a", b'{"pid": 1}', 60)
    store.heartbeat("celery@host-b", b"\x00binary\xff", 60)
    assert store.workers() == {"celery@host-a": b'{"pid": 1}', "celery@host-b": b"\x00binary\xff"}
    store.heartbeat("celery@host-a", b'{"pid": 2}', 60)
    assert store.workers()["celery@host-a"] == b'{"pid": 2}'


def test_a_worker_whose_heartbeat_expired_is_not_listed(store: Store) -> None:
    store.heartbeat("alive", b"1", 60)
    store.heartbeat("dying", b"2", SHORT)
    store.heartbeat("renewed", b"3", SHORT)
    assert set(store.workers()) == {"alive", "dying", "renewed"}
    time.sleep(SHORT / 2)
    store.heartbeat("renewed", b"4", 60)
    time.sleep(SHORT / 2 + 0.1)
    assert store.workers() == {"alive": b"1", "renewed": b"4"}
    store.heartbeat("dying", b"back", 60)  # a worker that comes back is listed again
    assert store.workers() == {"alive": b"1", "renewed": b"4", "dying": b"back"}


def test_heartbeats_are_seen_through_another_connection(store: Store, other_store: Store) -> None:
    store.heartbeat("w1", b"info", 60)
    assert other_store.workers() == {"w1": b"info"}


# -- shared values -------------------------------------------------------------------------


def test_values_are_kept_per_namespace_until_changed(store: Store) -> None:
    assert store.get_values("rate_limits") == {}
    store.set_value("rate_limits", "proc.add", b"10/s")
    store.set_value("rate_limits", "proc.mul", b"\x00binary\xff")
    store.set_value("other", "proc.add", b"x")
    assert store.get_values("rate_limits") == {"proc.add": b"10/s", "proc.mul": b"\x00binary\xff"}
    store.set_value("rate_limits", "proc.add", b"5/m")
    store.set_value("rate_limits", "proc.mul", None)
    store.set_value("rate_limits", "never.set", None)  # deleting a missing key is fine
    assert store.get_values("rate_limits") == {"proc.add": b"5/m"}
    assert store.get_values("other") == {"proc.add": b"x"}


def test_values_are_seen_through_another_connection(store: Store, other_store: Store) -> None:
    store.set_value("rate_limits", "t", b"1/s")
    assert other_store.get_values("rate_limits") == {"t": b"1/s"}
