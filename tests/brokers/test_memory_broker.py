"""What the memory broker does beyond the shared contracts."""

from __future__ import annotations

import time

from flask_tasks.brokers.memory import MemoryBroker


def test_expired_entries_are_dropped_even_if_never_read() -> None:
    broker = MemoryBroker()
    for i in range(50):
        broker.set_result(f"t{i}", b"x", 0.05)
        broker.incr(f"c{i}", 0.05)
    broker.revoke([f"r{i}" for i in range(50)], 0.05, terminate=True)
    for i in range(50):
        broker.claim(f"k{i}", 0.05)
        broker.heartbeat(f"w{i}", b"info", 0.05)
    broker.set_result("kept", b"x", 0.05)
    broker.set_result("kept", b"y", 0)  # written again: its old expiry no longer applies
    time.sleep(0.1)
    broker.set_result("trigger", b"x", 60)
    assert set(broker._results) == {"kept", "trigger"}
    assert not broker._counters and not broker._revoked and not broker._terminate
    assert not broker._claims and not broker._workers
