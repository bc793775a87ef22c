"""The broker contract: the joint steps of a transport that is also its own store.

``publish_with_records``, ``ack_with_records`` and ``release_with_record`` change a queue
and write result records in one atomic step. Every test runs on every broker (``BROKERS``
in ``conftest.py``); each broker also passes the transport and store contracts.
"""

from __future__ import annotations

import time

import pytest
from contract_helpers import LEASE, BackendSpec, Background, drain, env, eventually, ids

from flask_tasks.brokers import Broker, Delivery, Envelope

SHORT = 0.2  # a time to live that a test waits out


def peer_of(broker: Broker, spec: BackendSpec) -> Broker:
    """Another connection to the broker's data, or the broker itself where none exists."""
    return spec.open_broker() if spec.shared else broker


# -- publish_with_records ------------------------------------------------------------------


def test_publish_records_pending_results_atomically(broker: Broker) -> None:
    broker.publish_with_records(
        [Envelope("a", "q", b"1"), Envelope("b", "q", b"2")],
        {"a": b"PENDING-a", "b": b"PENDING-b"},
        60,
    )
    assert broker.get_results(["a", "b"]) == [b"PENDING-a", b"PENDING-b"]
    broker.publish_with_records([Envelope("c", "q", b"3")], {}, 60)
    assert broker.get_result("c") is None
    broker.publish([Envelope("d", "q", b"4")])  # publish: the joint step without records
    assert broker.get_result("d") is None
    assert drain(broker) == ["a", "b", "c", "d"]


def test_publish_record_ttl(broker: Broker) -> None:
    broker.publish_with_records([Envelope("a", "q", b"1")], {"a": b"PENDING"}, SHORT)
    broker.publish_with_records([Envelope("b", "q", b"1")], {"b": b"PENDING"}, 0)
    time.sleep(SHORT + 0.1)
    assert broker.get_result("a") is None
    assert broker.get_result("b") == b"PENDING"  # ttl 0: kept
    assert broker.queue_length("q") == 2  # the messages do not expire with the records


def test_publish_with_records_only_or_nothing(broker: Broker) -> None:
    broker.publish_with_records([], {"orphan": b"PENDING"}, 60)
    broker.publish_with_records([], {}, 60)
    assert broker.get_result("orphan") == b"PENDING"
    assert broker.queue_length("q") == 0


@pytest.mark.parametrize("priority", [-1, 10])
def test_priority_out_of_range_is_refused_before_anything_is_stored(
    broker: Broker, priority: int
) -> None:
    with pytest.raises(ValueError, match="priority"):
        broker.publish_with_records(
            [env("fine"), env("bad", priority=priority)], {"fine": b"PENDING"}, 0
        )
    assert broker.queue_length("q") == 0
    assert broker.get_result("fine") is None


def test_a_published_record_is_never_seen_before_its_message(
    broker: Broker, broker_spec: BackendSpec
) -> None:
    peer = peer_of(broker, broker_spec)

    def watch_then_reserve() -> list[str]:
        assert peer.watch_result("m", None, 20) == b"PENDING"
        return ids(peer.reserve(["q"], 5, LEASE))

    watcher = Background(watch_then_reserve)
    time.sleep(0.1)
    broker.publish_with_records([env("m")], {"m": b"PENDING"}, 60)
    assert watcher.result() == ["m"]


# -- ack_with_records ------------------------------------------------------------------------


def test_ack_with_records_acks_each_and_stores_their_records(broker: Broker) -> None:
    broker.publish([Envelope(f"m{index}", "q", b"body") for index in range(5)])
    taken = broker.reserve(["q"], 5, 30)
    assert len(taken) == 5
    broker.ack_with_records(
        [
            ("m0", b"record-0"),
            ("m1", None),
            ("m2", b"record-2"),
            ("m3", b"record-3"),
            ("m4", None),
        ],
        60,
    )
    assert broker.get_results(["m0", "m1", "m2", "m3", "m4"]) == [
        b"record-0",
        None,
        b"record-2",
        b"record-3",
        None,
    ]
    broker.release("m0")  # acked: nothing to release
    assert broker.reserve(["q"], 5, 0.01) == []
    assert broker.queue_length("q") == 0


def test_ack_with_records_with_one_and_with_none(broker: Broker) -> None:
    broker.publish([Envelope("only", "q", b"body")])
    [delivery] = broker.reserve(["q"], 1, 30)
    broker.ack_with_records([(delivery.id, b"done")], 0)
    broker.ack_with_records([], 0)
    assert broker.get_result("only") == b"done"


def test_ack_with_record_stores_the_result(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.reserve(["q"], 1, LEASE)
    broker.ack_with_records([("m", b"SUCCESS-record")], 60)
    assert broker.get_result("m") == b"SUCCESS-record"


def test_ack_of_unknown_id_still_stores_its_record(broker: Broker) -> None:
    broker.ack_with_records([("ghost", None)], 0)
    broker.ack_with_records([("ghost2", b"record")], 0)
    assert broker.get_results(["ghost", "ghost2"]) == [None, b"record"]


def test_ack_with_records_of_many(broker: Broker) -> None:
    broker.publish([env(f"m{i}") for i in range(300)])
    taken = broker.reserve(["q"], 300, SHORT)
    broker.ack_with_records([(d.id, d.id.encode()) for d in taken], 60)
    time.sleep(SHORT + 0.1)
    assert broker.reserve(["q"], 300, LEASE) == []
    assert broker.get_results([f"m{i}" for i in range(300)]) == [
        f"m{i}".encode() for i in range(300)
    ]


def test_ack_and_reserve_settles_a_batch_and_takes_the_next(broker: Broker) -> None:
    broker.publish([env(f"m{i}") for i in range(5)])
    first = broker.reserve(["q"], 2, LEASE)
    stale = Delivery(first[1].id, "q", 5, b"", token="not-its-lease")
    refused, taken = broker.ack_and_reserve(
        [(first[0], b"record-0"), (stale, b"stale")], 60, ["q"], 2, LEASE
    )
    assert refused == [first[1].id]
    assert [d.id for d in taken] == ["m2", "m3"]
    assert broker.get_results(["m0", "m1"]) == [b"record-0", None]
    assert broker.held(["m0", "m1", "m2", "m3"]) in ({"m1", "m2", "m3"}, None)
    refused, taken = broker.ack_and_reserve([], 60, ["q"], 5, LEASE)
    assert (refused, [d.id for d in taken]) == ([], ["m4"])
    refused, taken = broker.ack_and_reserve(
        [(t, None) for t in [first[1], *taken]], 0, ["q"], 5, LEASE
    )
    assert (refused, taken) == ([], [])
    assert broker.held(["m1", "m4"]) in (set(), None)


# -- release_with_record ---------------------------------------------------------------------


def test_release_with_eta_delays(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.reserve(["q"], 1, LEASE)
    eta = time.time() + 0.3
    broker.release_with_record("m", b"retry", eta, b"RETRY", 60)
    assert broker.get_result("m") == b"RETRY"
    assert broker.reserve(["q"], 10, LEASE) == []
    assert broker.queue_length("q") == 0
    delivered = eventually(lambda: broker.reserve(["q"], 10, LEASE))
    assert time.time() >= eta
    assert delivered == [Delivery("m", "q", 5, b"retry")]
    time.sleep(0.05)
    assert broker.reserve(["q"], 10, LEASE) == []


def test_release_with_record_only(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.reserve(["q"], 1, LEASE)
    broker.release_with_record("m", None, None, b"REQUEUED", 60)
    assert broker.get_result("m") == b"REQUEUED"
    assert drain(broker) == ["m"]


def test_release_with_no_record_keeps_the_stored_one(broker: Broker) -> None:
    broker.publish_with_records([env("m")], {"m": b"PENDING"}, 60)
    broker.reserve(["q"], 1, LEASE)
    broker.release_with_record("m", None, None, None, 60)
    assert broker.get_result("m") == b"PENDING"
    assert drain(broker) == ["m"]


def test_release_of_a_message_not_held_still_stores_the_record(broker: Broker) -> None:
    broker.release_with_record("ghost", None, None, b"RETRY", 60)
    assert broker.get_result("ghost") == b"RETRY"
    assert broker.reserve(["q"], 10, LEASE) == []


def test_ack_and_release_record_ttl(broker: Broker) -> None:
    broker.publish([Envelope("a", "q", b"1"), Envelope("b", "q", b"2")])
    broker.reserve(["q"], 2, 30)
    broker.ack_with_records([("a", b"SUCCESS")], SHORT)
    broker.release_with_record("b", None, None, b"RETRY", SHORT)
    assert broker.get_results(["a", "b"]) == [b"SUCCESS", b"RETRY"]
    time.sleep(SHORT + 0.1)
    assert broker.get_results(["a", "b"]) == [None, None]


def test_a_retry_record_is_never_seen_before_the_release(
    broker: Broker, broker_spec: BackendSpec
) -> None:
    peer = peer_of(broker, broker_spec)
    broker.publish_with_records([env("m")], {"m": b"STARTED"}, 60)
    broker.reserve(["q"], 1, LEASE)

    def watch_then_reserve() -> list[Delivery]:
        assert peer.watch_result("m", b"STARTED", 20) == b"RETRY"
        return peer.reserve(["q"], 5, LEASE)

    watcher = Background(watch_then_reserve)
    time.sleep(0.1)
    broker.release_with_record("m", b"retries=1", None, b"RETRY", 60)
    assert watcher.result() == [Delivery("m", "q", 5, b"retries=1")]


# -- records wake watchers; deliveries say whether they are revoked ---------------------------


def test_watch_wakes_on_ack_and_publish(broker: Broker) -> None:
    broker.publish([Envelope("t", "q", b"1")])
    broker.reserve(["q"], 1, 30)
    watcher = Background(lambda: broker.watch_result("t", None, 20))
    time.sleep(0.1)
    broker.ack_with_records([("t", b"SUCCESS")], 60)
    assert watcher.result() == b"SUCCESS"

    watcher = Background(lambda: broker.watch_result("u", None, 20))
    time.sleep(0.1)
    broker.publish_with_records([Envelope("u", "q", b"1")], {"u": b"PENDING"}, 0)
    assert watcher.result() == b"PENDING"

    watcher = Background(lambda: broker.watch_result("u", b"PENDING", 20))
    time.sleep(0.1)
    broker.release_with_record("ghost-u", None, None, b"ignored", 60)  # another record
    broker.forget_result("u")
    assert watcher.result() is None


def test_reserve_flags_revoked_deliveries(broker: Broker) -> None:
    names = ("kept", "revoked", "lapsed", "terminated")
    broker.publish([Envelope(name, "q", b"x") for name in names])
    broker.revoke(["revoked"], 60)
    broker.revoke(["lapsed"], 0.05)
    broker.revoke(["terminated"], 60, terminate=True)
    time.sleep(0.1)
    flags = {delivery.id: delivery.revoked for delivery in broker.reserve(["q"], 4, 30)}
    assert flags == {"kept": False, "revoked": True, "lapsed": False, "terminated": True}
