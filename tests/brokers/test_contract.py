"""The broker contract, part 1: queues, priorities, delays, leases, ack, release, dead letters.

Every test runs on every broker (see ``conftest.py``). The contract is the docstrings of
``flask_tasks.brokers.base.Broker``.
"""

from __future__ import annotations

import time

import pytest
from contract_helpers import eventually

from flask_tasks.brokers import Broker, Delivery, Envelope

LEASE = 30.0  # long enough never to run out during a test, unless a test wants it to
SHORT = 0.3  # a lease or delay a test waits out


def env(message_id: str, queue: str = "q", priority: int = 5, eta: float | None = None,
        body: bytes | None = None) -> Envelope:
    return Envelope(message_id, queue, body or f"body-{message_id}".encode(), priority, eta)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [delivery.id for delivery in deliveries]


def drain(broker: Broker, queues: tuple[str, ...] = ("q",)) -> list[str]:
    return ids(broker.reserve(list(queues), 1000, LEASE))


# -- publishing and order ----------------------------------------------------------------


def test_identity(broker: Broker) -> None:
    assert broker.kind in {"memory", "sqlite", "redis"}
    assert isinstance(broker.url, str) and broker.url
    broker.ping()


def test_reserve_from_empty_queue(broker: Broker) -> None:
    assert broker.reserve(["q"], 5, LEASE) == []
    assert broker.queue_length("q") == 0


def test_fifo_within_a_priority(broker: Broker) -> None:
    broker.publish([env("a"), env("b")])
    broker.publish([env("c")])
    broker.publish([env("d"), env("e")])
    assert drain(broker) == ["a", "b", "c", "d", "e"]


def test_delivery_carries_queue_priority_and_exact_body(broker: Broker) -> None:
    body = bytes(range(256)) + b"\x00\xff not utf-8 \xc3\x28"
    broker.publish([Envelope("m", "q", body, 7)])
    [delivery] = broker.reserve(["q"], 1, LEASE)
    assert delivery == Delivery("m", "q", 7, body)
    assert isinstance(delivery.body, bytes)


def test_priority_zero_first_then_fifo(broker: Broker) -> None:
    broker.publish([env("p5a", priority=5), env("p9", priority=9), env("p0a", priority=0)])
    broker.publish([env("p5b", priority=5), env("p0b", priority=0), env("p1", priority=1)])
    assert drain(broker) == ["p0a", "p0b", "p1", "p5a", "p5b", "p9"]


def test_count_limits_and_continues(broker: Broker) -> None:
    broker.publish([env(f"m{i}") for i in range(5)])
    assert ids(broker.reserve(["q"], 2, LEASE)) == ["m0", "m1"]
    assert ids(broker.reserve(["q"], 2, LEASE)) == ["m2", "m3"]
    assert ids(broker.reserve(["q"], 2, LEASE)) == ["m4"]
    assert broker.reserve(["q"], 2, LEASE) == []


def test_first_queue_has_precedence_over_priority(broker: Broker) -> None:
    broker.publish([env("low-a", "a", priority=9), env("high-b", "b", priority=0)])
    broker.publish([env("a2", "a"), env("b2", "b")])
    assert ids(broker.reserve(["a", "b"], 1, LEASE)) == ["a2"]
    assert ids(broker.reserve(["a", "b"], 10, LEASE)) == ["low-a", "high-b", "b2"]


def test_count_spans_queues_in_order(broker: Broker) -> None:
    broker.publish([env("a1", "a"), env("b1", "b"), env("b2", "b"), env("c1", "c")])
    deliveries = broker.reserve(["b", "a"], 3, LEASE)
    assert ids(deliveries) == ["b1", "b2", "a1"]
    assert [d.queue for d in deliveries] == ["b", "b", "a"]


def test_reserve_ignores_queues_not_named(broker: Broker) -> None:
    broker.publish([env("x", "other")])
    assert broker.reserve(["q"], 10, LEASE) == []
    assert broker.queue_length("other") == 1


def test_publish_replaces_a_stored_id(broker: Broker) -> None:
    broker.publish([env("m", body=b"first"), env("n")])
    broker.publish([env("m", body=b"second")])
    deliveries = broker.reserve(["q"], 10, LEASE)
    assert sorted(ids(deliveries)) == ["m", "n"]
    assert {d.id: d.body for d in deliveries}["m"] == b"second"


def test_publish_replacing_moves_queue_and_timing(broker: Broker) -> None:
    broker.publish([env("m", "a")])
    broker.publish([env("m", "b", priority=2, body=b"moved")])
    assert broker.queue_length("a") == 0
    assert broker.reserve(["a"], 10, LEASE) == []
    assert broker.reserve(["b"], 10, LEASE) == [Delivery("m", "b", 2, b"moved")]

    broker.publish([env("d", eta=time.time() + 60)])
    broker.publish([env("d", body=b"now")])  # delayed -> ready
    assert broker.reserve(["q"], 10, LEASE) == [Delivery("d", "q", 5, b"now")]

    broker.publish([env("r")])
    broker.publish([env("r", eta=time.time() + 60)])  # ready -> delayed
    assert broker.queue_length("q") == 0
    assert broker.reserve(["q"], 10, LEASE) == []


def test_out_of_order_publish_in_one_call_keeps_call_order(broker: Broker) -> None:
    broker.publish([env(f"m{i}") for i in range(50)])
    assert drain(broker) == [f"m{i}" for i in range(50)]


# -- delayed messages --------------------------------------------------------------------


def test_delayed_message_waits_for_its_eta(broker: Broker) -> None:
    eta = time.time() + SHORT
    broker.publish([env("later", eta=eta), env("now")])
    assert drain(broker) == ["now"]
    assert broker.queue_length("q") == 0
    delivered = eventually(lambda: broker.reserve(["q"], 10, LEASE))
    assert time.time() >= eta
    assert ids(delivered) == ["later"]
    time.sleep(0.05)
    assert broker.reserve(["q"], 10, LEASE) == []


def test_eta_in_the_past_is_ready_now(broker: Broker) -> None:
    broker.publish([env("past", eta=time.time() - 10)])
    assert broker.queue_length("q") == 1
    assert drain(broker) == ["past"]


def test_due_delayed_messages_are_promoted_in_eta_order(broker: Broker) -> None:
    now = time.time()
    broker.publish([env("second", eta=now + 0.15), env("first", eta=now + 0.1)])
    time.sleep(0.2)
    assert drain(broker) == ["first", "second"]


# -- leases ------------------------------------------------------------------------------


def test_leased_message_is_hidden_while_held(broker: Broker) -> None:
    broker.publish([env("m"), env("n")])
    assert ids(broker.reserve(["q"], 1, LEASE)) == ["m"]
    assert broker.queue_length("q") == 1
    assert ids(broker.reserve(["q"], 10, LEASE)) == ["n"]
    assert broker.reserve(["q"], 10, LEASE) == []
    assert broker.queue_length("q") == 0


def test_expired_lease_is_redelivered_at_the_front(broker: Broker) -> None:
    broker.publish([env("a"), env("b"), env("c")])
    assert ids(broker.reserve(["q"], 2, SHORT)) == ["a", "b"]
    assert ids(broker.reserve(["q"], 1, LEASE)) == ["c"]  # c stays held throughout
    broker.publish([env("d")])
    assert broker.reserve(["q"], 10, SHORT)[0].id == "d"  # held by another consumer
    broker.extend(["d"], LEASE)
    broker.publish([env("e")])
    time.sleep(SHORT + 0.1)
    redelivered = broker.reserve(["q"], 10, LEASE)
    # In front of e, which came later, and in the order in which they were leased.
    assert ids(redelivered) == ["a", "b", "e"]
    assert {d.id: d.body for d in redelivered}["a"] == b"body-a"


def test_expired_lease_is_not_redelivered_early(broker: Broker) -> None:
    broker.publish([env("m")])
    leased_at = time.time()
    broker.reserve(["q"], 1, SHORT)
    assert broker.reserve(["q"], 1, LEASE) == []
    assert ids(eventually(lambda: broker.reserve(["q"], 1, LEASE))) == ["m"]
    assert time.time() >= leased_at + SHORT
    assert broker.reserve(["q"], 1, LEASE) == []  # once


def test_extend_keeps_a_message_held(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.reserve(["q"], 1, SHORT)
    broker.extend(["m", "not-held"], LEASE)
    time.sleep(SHORT + 0.1)
    assert broker.reserve(["q"], 10, LEASE) == []
    assert broker.queue_length("q") == 0


def test_extend_can_shorten_and_ignores_unknown_ids(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.reserve(["q"], 1, LEASE)
    broker.extend(iter(["m"]), 0.1)
    broker.extend([], LEASE)
    broker.extend(["ghost"], LEASE)
    assert ids(eventually(lambda: broker.reserve(["q"], 10, LEASE))) == ["m"]


def test_extend_does_not_revive_an_acked_message(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.reserve(["q"], 1, SHORT)
    broker.ack("m")
    broker.extend(["m"], SHORT)
    time.sleep(SHORT + 0.1)
    assert broker.reserve(["q"], 10, LEASE) == []


# -- ack ---------------------------------------------------------------------------------


def test_ack_forgets_the_message(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.reserve(["q"], 1, 0.1)
    broker.ack("m")
    time.sleep(0.2)
    assert broker.reserve(["q"], 10, LEASE) == []
    assert broker.queue_length("q") == 0


def test_ack_with_record_stores_the_result(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.reserve(["q"], 1, LEASE)
    broker.ack("m", b"SUCCESS-record", 60)
    assert broker.get_result("m") == b"SUCCESS-record"


def test_ack_of_unknown_id_is_harmless(broker: Broker) -> None:
    broker.ack("ghost")
    broker.ack("ghost2", b"record")
    assert broker.get_result("ghost2") == b"record"


# -- release -----------------------------------------------------------------------------


def test_release_returns_to_the_front(broker: Broker) -> None:
    broker.publish([env("a"), env("b"), env("c")])
    assert ids(broker.reserve(["q"], 2, LEASE)) == ["a", "b"]
    broker.release("b")
    assert drain(broker) == ["b", "c"]


def test_release_with_new_body(broker: Broker) -> None:
    broker.publish([env("m", priority=3)])
    broker.reserve(["q"], 1, LEASE)
    broker.release("m", body=b"retries=1")
    assert broker.reserve(["q"], 10, LEASE) == [Delivery("m", "q", 3, b"retries=1")]


def test_release_with_eta_delays(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.reserve(["q"], 1, LEASE)
    eta = time.time() + SHORT
    broker.release("m", body=b"retry", eta=eta, record=b"RETRY", record_ttl=60)
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
    broker.release("m", record=b"REQUEUED", record_ttl=60)
    assert broker.get_result("m") == b"REQUEUED"
    assert drain(broker) == ["m"]


def test_release_of_a_message_not_held_is_a_no_op(broker: Broker) -> None:
    broker.publish([env("a"), env("b")])
    broker.release("b")  # ready, not held: stays where it is
    broker.release("ghost")
    assert drain(broker) == ["a", "b"]
    broker.ack("a")
    broker.release("a")  # acked: stays gone
    assert broker.reserve(["q"], 10, LEASE) == []


def test_release_not_held_with_body_publishes_again(broker: Broker) -> None:
    broker.publish([env("m")])
    broker.release("m", body=b"replaced")
    assert broker.reserve(["q"], 10, LEASE) == [Delivery("m", "q", 5, b"replaced")]
    assert broker.reserve(["q"], 10, LEASE) == []


# -- dead letters ------------------------------------------------------------------------


def test_dead_letter_keeps_message_and_reason(broker: Broker) -> None:
    broker.publish([Envelope("m", "q", b"\xff\xfe garbage", 2)])
    [delivery] = broker.reserve(["q"], 1, 0.1)
    before = time.time()
    broker.dead_letter(delivery, "DecodeError: not JSON")
    [letter] = broker.dead_letters()
    assert (letter.id, letter.queue, letter.priority) == ("m", "q", 2)
    assert letter.body == b"\xff\xfe garbage"
    assert letter.reason == "DecodeError: not JSON"
    assert before - 1 <= letter.failed_at <= time.time() + 1
    time.sleep(0.2)
    assert broker.reserve(["q"], 10, LEASE) == []  # the lease is gone with it


def test_dead_letters_newest_first_with_limit(broker: Broker) -> None:
    broker.publish([env(f"m{i}") for i in range(4)])
    for delivery in broker.reserve(["q"], 4, LEASE):
        broker.dead_letter(delivery, f"reason {delivery.id}")
        time.sleep(0.002)
    assert [letter.id for letter in broker.dead_letters()] == ["m3", "m2", "m1", "m0"]
    assert [letter.id for letter in broker.dead_letters(limit=2)] == ["m3", "m2"]


def test_retry_dead_letter_moves_it_to_the_back_of_its_queue(broker: Broker) -> None:
    broker.publish([Envelope("m", "q", b"payload", 4)])
    [delivery] = broker.reserve(["q"], 1, LEASE)
    broker.dead_letter(delivery, "unknown task")
    broker.publish([env("n", priority=4)])
    assert broker.retry_dead_letter("m") is True
    assert broker.dead_letters() == []
    assert broker.retry_dead_letter("m") is False
    assert broker.retry_dead_letter("ghost") is False
    assert broker.reserve(["q"], 10, LEASE) == [
        Delivery("n", "q", 4, b"body-n"),
        Delivery("m", "q", 4, b"payload"),
    ]


@pytest.mark.parametrize("priority", [-1, 10])
def test_priority_out_of_range_is_refused_before_anything_is_stored(
    broker: Broker, priority: int
) -> None:
    with pytest.raises(ValueError, match="priority"):
        broker.publish(
            [env("fine"), env("bad", priority=priority)], records={"fine": b"PENDING"}
        )
    assert broker.queue_length("q") == 0
    assert broker.get_result("fine") is None


# -- inspection and administration -------------------------------------------------------


def test_queue_length_counts_only_ready_messages(broker: Broker) -> None:
    broker.publish([env("a"), env("b"), env("c"), env("other", "elsewhere")])
    broker.publish([env("later", eta=time.time() + 60)])
    broker.reserve(["q"], 1, LEASE)
    assert broker.queue_length("q") == 2
    assert broker.queue_length("elsewhere") == 1
    assert broker.queue_length("never-used") == 0


def test_purge_drops_ready_messages_only(broker: Broker) -> None:
    broker.publish([env("a"), env("b"), env("c", priority=0), env("keep", "elsewhere")])
    broker.publish([env("later", eta=time.time() + SHORT)])
    [held] = broker.reserve(["q"], 1, LEASE)
    assert broker.purge("q") == 2
    assert broker.purge("q") == 0
    assert broker.queue_length("q") == 0
    assert broker.queue_length("elsewhere") == 1
    broker.release(held.id)  # the held message survives the purge
    assert drain(broker) == [held.id]
    assert ids(eventually(lambda: broker.reserve(["q"], 10, LEASE))) == ["later"]

