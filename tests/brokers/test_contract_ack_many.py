"""Contract: ``ack_many`` acks a batch exactly as single acks would."""

from __future__ import annotations

from flask_tasks.brokers import Broker, Envelope


def test_ack_many_acks_each_and_stores_their_records(broker: Broker) -> None:
    broker.publish([Envelope(f"m{index}", "q", b"body") for index in range(5)])
    taken = broker.reserve(["q"], 5, 30)
    assert len(taken) == 5
    broker.ack_many([
        ("m0", b"record-0", 60),
        ("m1", None, 0),
        ("m2", b"record-2", 0),
        ("m3", b"record-3", 60),
        ("m4", None, 0),
    ])
    assert broker.get_results(["m0", "m1", "m2", "m3", "m4"]) == [
        b"record-0", None, b"record-2", b"record-3", None,
    ]
    broker.release("m0")  # acked: nothing to release
    assert broker.reserve(["q"], 5, 0.01) == []
    assert broker.queue_length("q") == 0


def test_ack_many_with_one_and_with_none(broker: Broker) -> None:
    broker.publish([Envelope("only", "q", b"body")])
    [delivery] = broker.reserve(["q"], 1, 30)
    broker.ack_many([(delivery.id, b"done", 0)])
    broker.ack_many([])
    assert broker.get_result("only") == b"done"
