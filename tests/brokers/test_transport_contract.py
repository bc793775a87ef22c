"""The transport contract, part 1: queues, priorities, delays, leases, ack, release, dead
letters, inspection.

Every test runs on every transport (``TRANSPORTS`` in ``conftest.py``). The contract is
the docstrings of ``flask_tasks.brokers.base.Transport``. Waiting and concurrency:
``test_transport_contract_concurrency.py``.
"""

from __future__ import annotations

import time

import pytest
from contract_helpers import LEASE, SHORT, drain, env, eventually, ids

from flask_tasks.brokers import Delivery, Envelope, Transport

# -- publishing and order ----------------------------------------------------------------


def test_identity(transport: Transport) -> None:
    assert isinstance(transport.kind, str) and transport.kind
    assert isinstance(transport.url, str) and transport.url
    transport.ping()
    assert abs(transport.now() - time.time()) < 1


def test_reserve_from_empty_queue(transport: Transport) -> None:
    assert transport.reserve(["q"], 5, LEASE) == []
    assert transport.queue_length("q") == 0


def test_fifo_within_a_priority(transport: Transport) -> None:
    transport.publish([env("a"), env("b")])
    transport.publish([env("c")])
    transport.publish([env("d"), env("e")])
    assert drain(transport) == ["a", "b", "c", "d", "e"]


def test_delivery_carries_queue_priority_and_exact_body(transport: Transport) -> None:
    body = bytes(range(256)) + b"\x00\xff not utf-8 \xc3\x28"
    transport.publish([Envelope("m", "q", body, 7)])
    [delivery] = transport.reserve(["q"], 1, LEASE)
    assert delivery == Delivery("m", "q", 7, body)
    assert isinstance(delivery.body, bytes)


def test_priority_zero_first_then_fifo(transport: Transport) -> None:
    transport.publish([env("p5a", priority=5), env("p9", priority=9), env("p0a", priority=0)])
    transport.publish([env("p5b", priority=5), env("p0b", priority=0), env("p1", priority=1)])
    assert drain(transport) == ["p0a", "p0b", "p1", "p5a", "p5b", "p9"]


def test_count_limits_and_continues(transport: Transport) -> None:
    transport.publish([env(f"m{i}") for i in range(5)])
    assert ids(transport.reserve(["q"], 2, LEASE)) == ["m0", "m1"]
    assert ids(transport.reserve(["q"], 2, LEASE)) == ["m2", "m3"]
    assert ids(transport.reserve(["q"], 2, LEASE)) == ["m4"]
    assert transport.reserve(["q"], 2, LEASE) == []


def test_first_queue_has_precedence_over_priority(transport: Transport) -> None:
    transport.publish([env("low-a", "a", priority=9), env("high-b", "b", priority=0)])
    transport.publish([env("a2", "a"), env("b2", "b")])
    assert ids(transport.reserve(["a", "b"], 1, LEASE)) == ["a2"]
    assert ids(transport.reserve(["a", "b"], 10, LEASE)) == ["low-a", "high-b", "b2"]


def test_count_spans_queues_in_order(transport: Transport) -> None:
    transport.publish([env("a1", "a"), env("b1", "b"), env("b2", "b"), env("c1", "c")])
    deliveries = transport.reserve(["b", "a"], 3, LEASE)
    assert ids(deliveries) == ["b1", "b2", "a1"]
    assert [d.queue for d in deliveries] == ["b", "b", "a"]


def test_reserve_ignores_queues_not_named(transport: Transport) -> None:
    transport.publish([env("x", "other")])
    assert transport.reserve(["q"], 10, LEASE) == []
    assert transport.queue_length("other") == 1


def test_publish_replaces_a_stored_id(transport: Transport) -> None:
    transport.publish([env("m", body=b"first"), env("n")])
    transport.publish([env("m", body=b"second")])
    deliveries = transport.reserve(["q"], 10, LEASE)
    assert sorted(ids(deliveries)) == ["m", "n"]
    assert {d.id: d.body for d in deliveries}["m"] == b"second"


def test_publish_replacing_moves_queue_and_timing(transport: Transport) -> None:
    transport.publish([env("m", "a")])
    transport.publish([env("m", "b", priority=2, body=b"moved")])
    assert transport.queue_length("a") == 0
    assert transport.reserve(["a"], 10, LEASE) == []
    assert transport.reserve(["b"], 10, LEASE) == [Delivery("m", "b", 2, b"moved")]

    transport.publish([env("d", eta=time.time() + 60)])
    transport.publish([env("d", body=b"now")])  # delayed -> ready
    assert transport.reserve(["q"], 10, LEASE) == [Delivery("d", "q", 5, b"now")]

    transport.publish([env("r")])
    transport.publish([env("r", eta=time.time() + 60)])  # ready -> delayed
    assert transport.queue_length("q") == 0
    assert transport.reserve(["q"], 10, LEASE) == []


def test_out_of_order_publish_in_one_call_keeps_call_order(transport: Transport) -> None:
    transport.publish([env(f"m{i}") for i in range(50)])
    assert drain(transport) == [f"m{i}" for i in range(50)]


# -- delayed messages --------------------------------------------------------------------


def test_delayed_message_waits_for_its_eta(transport: Transport) -> None:
    eta = time.time() + 1.0  # a margin for a busy machine between this line and publish
    transport.publish([env("later", eta=eta), env("now")])
    assert drain(transport) == ["now"]
    assert transport.queue_length("q") == 0
    delivered = eventually(lambda: transport.reserve(["q"], 10, LEASE))
    assert time.time() >= eta
    assert ids(delivered) == ["later"]
    time.sleep(0.05)
    assert transport.reserve(["q"], 10, LEASE) == []


def test_eta_in_the_past_is_ready_now(transport: Transport) -> None:
    transport.publish([env("past", eta=time.time() - 10)])
    assert transport.queue_length("q") == 1
    assert drain(transport) == ["past"]


def test_due_delayed_messages_are_promoted_in_eta_order(transport: Transport) -> None:
    now = time.time()  # margins for a busy machine between this line and publish
    transport.publish([env("second", eta=now + 0.8), env("first", eta=now + 0.6)])
    time.sleep(1.0)
    assert drain(transport) == ["first", "second"]


# -- leases ------------------------------------------------------------------------------


def test_leased_message_is_hidden_while_held(transport: Transport) -> None:
    transport.publish([env("m"), env("n")])
    assert ids(transport.reserve(["q"], 1, LEASE)) == ["m"]
    assert transport.queue_length("q") == 1
    assert ids(transport.reserve(["q"], 10, LEASE)) == ["n"]
    assert transport.reserve(["q"], 10, LEASE) == []
    assert transport.queue_length("q") == 0


def test_expired_lease_is_redelivered_at_the_front(transport: Transport) -> None:
    transport.publish([env("a"), env("b"), env("c")])
    assert ids(transport.reserve(["q"], 2, SHORT)) == ["a", "b"]
    assert ids(transport.reserve(["q"], 1, LEASE)) == ["c"]  # c stays held throughout
    transport.publish([env("d")])
    assert transport.reserve(["q"], 10, SHORT)[0].id == "d"  # held by another consumer
    transport.extend(["d"], LEASE)
    transport.publish([env("e")])
    time.sleep(SHORT + 0.1)
    redelivered = transport.reserve(["q"], 10, LEASE)
    # In front of e, which came later, and in the order in which they were leased.
    assert ids(redelivered) == ["a", "b", "e"]
    assert {d.id: d.body for d in redelivered}["a"] == b"body-a"


def test_expired_lease_is_not_redelivered_early(transport: Transport) -> None:
    transport.publish([env("m")])
    leased_at = time.time()
    transport.reserve(["q"], 1, SHORT)
    assert transport.reserve(["q"], 1, LEASE) == []
    assert ids(eventually(lambda: transport.reserve(["q"], 1, LEASE))) == ["m"]
    assert time.time() >= leased_at + SHORT
    assert transport.reserve(["q"], 1, LEASE) == []  # once


def test_extend_keeps_a_message_held(transport: Transport) -> None:
    transport.publish([env("m")])
    transport.reserve(["q"], 1, SHORT)
    transport.extend(["m", "not-held"], LEASE)
    time.sleep(SHORT + 0.1)
    assert transport.reserve(["q"], 10, LEASE) == []
    assert transport.queue_length("q") == 0


def test_extend_can_shorten_and_ignores_unknown_ids(transport: Transport) -> None:
    transport.publish([env("m")])
    transport.reserve(["q"], 1, LEASE)
    transport.extend(iter(["m"]), 0.1)
    transport.extend([], LEASE)
    transport.extend(["ghost"], LEASE)
    assert ids(eventually(lambda: transport.reserve(["q"], 10, LEASE))) == ["m"]


def test_extend_does_not_revive_an_acked_message(transport: Transport) -> None:
    transport.publish([env("m")])
    transport.reserve(["q"], 1, SHORT)
    transport.ack(["m"])
    transport.extend(["m"], SHORT)
    time.sleep(SHORT + 0.1)
    assert transport.reserve(["q"], 10, LEASE) == []


# -- ack ---------------------------------------------------------------------------------


def test_ack_forgets_the_message(transport: Transport) -> None:
    transport.publish([env("m")])
    transport.reserve(["q"], 1, 0.1)
    transport.ack(["m"])
    time.sleep(0.2)
    assert transport.reserve(["q"], 10, LEASE) == []
    assert transport.queue_length("q") == 0


def test_ack_several_in_one_call(transport: Transport) -> None:
    transport.publish([env(f"m{index}") for index in range(5)])
    assert len(transport.reserve(["q"], 5, SHORT)) == 5
    transport.ack(["m0", "m1", "m3", "m4"])
    transport.ack([])
    time.sleep(SHORT + 0.1)
    assert drain(transport) == ["m2"]
    assert transport.queue_length("q") == 0


def test_ack_of_unknown_id_is_harmless(transport: Transport) -> None:
    transport.ack(["ghost"])
    transport.ack(("ghost2", "ghost3"))
    assert transport.reserve(["q"], 10, LEASE) == []


def test_ack_refuses_a_bare_string(transport: Transport) -> None:
    transport.publish([env("m")])
    transport.reserve(["q"], 1, SHORT)
    with pytest.raises(TypeError, match=r"\['m'\]"):
        transport.ack("m")
    time.sleep(SHORT + 0.1)
    assert drain(transport) == ["m"]  # nothing was acked


# -- release -----------------------------------------------------------------------------


def test_release_returns_to_the_front(transport: Transport) -> None:
    transport.publish([env("a"), env("b"), env("c")])
    assert ids(transport.reserve(["q"], 2, LEASE)) == ["a", "b"]
    transport.release("b")
    assert drain(transport) == ["b", "c"]


def test_release_with_new_body(transport: Transport) -> None:
    transport.publish([env("m", priority=3)])
    transport.reserve(["q"], 1, LEASE)
    transport.release("m", body=b"retries=1")
    assert transport.reserve(["q"], 10, LEASE) == [Delivery("m", "q", 3, b"retries=1")]


def test_release_with_eta_delays(transport: Transport) -> None:
    transport.publish([env("m")])
    transport.reserve(["q"], 1, LEASE)
    eta = time.time() + SHORT
    transport.release("m", body=b"retry", eta=eta)
    assert transport.reserve(["q"], 10, LEASE) == []
    assert transport.queue_length("q") == 0
    delivered = eventually(lambda: transport.reserve(["q"], 10, LEASE))
    assert time.time() >= eta
    assert delivered == [Delivery("m", "q", 5, b"retry")]
    time.sleep(0.05)
    assert transport.reserve(["q"], 10, LEASE) == []


def test_release_with_eta_in_the_past_goes_to_the_back(transport: Transport) -> None:
    transport.publish([env("m"), env("n")])
    transport.reserve(["q"], 1, LEASE)
    transport.release("m", eta=time.time() - 1)
    assert drain(transport) == ["n", "m"]


def test_release_of_a_message_not_held_is_a_no_op(transport: Transport) -> None:
    transport.publish([env("a"), env("b")])
    transport.release("b")  # ready, not held: stays where it is
    transport.release("ghost")
    assert drain(transport) == ["a", "b"]
    transport.ack(["a"])
    transport.release("a")  # acked: stays gone
    assert transport.reserve(["q"], 10, LEASE) == []


def test_release_not_held_with_body_publishes_again(transport: Transport) -> None:
    transport.publish([env("m")])
    transport.release("m", body=b"replaced")
    assert transport.reserve(["q"], 10, LEASE) == [Delivery("m", "q", 5, b"replaced")]
    assert transport.reserve(["q"], 10, LEASE) == []


# -- dead letters ------------------------------------------------------------------------


def test_dead_letter_keeps_message_and_reason(transport: Transport) -> None:
    transport.publish([Envelope("m", "q", b"\xff\xfe garbage", 2)])
    [delivery] = transport.reserve(["q"], 1, 0.1)
    before = time.time()
    transport.dead_letter(delivery, "DecodeError: not JSON")
    [letter] = transport.dead_letters()
    assert (letter.id, letter.queue, letter.priority) == ("m", "q", 2)
    assert letter.body == b"\xff\xfe garbage"
    assert letter.reason == "DecodeError: not JSON"
    assert before - 1 <= letter.failed_at <= time.time() + 1
    time.sleep(0.2)
    assert transport.reserve(["q"], 10, LEASE) == []  # the lease is gone with it


def test_dead_letters_newest_first_with_limit(transport: Transport) -> None:
    transport.publish([env(f"m{i}") for i in range(4)])
    for delivery in transport.reserve(["q"], 4, LEASE):
        transport.dead_letter(delivery, f"reason {delivery.id}")
        time.sleep(0.002)
    assert [letter.id for letter in transport.dead_letters()] == ["m3", "m2", "m1", "m0"]
    assert [letter.id for letter in transport.dead_letters(limit=2)] == ["m3", "m2"]


def test_retry_dead_letter_moves_it_to_the_back_of_its_queue(transport: Transport) -> None:
    transport.publish([Envelope("m", "q", b"payload", 4)])
    [delivery] = transport.reserve(["q"], 1, LEASE)
    transport.dead_letter(delivery, "unknown task")
    transport.publish([env("n", priority=4)])
    assert transport.retry_dead_letter("m") is True
    assert transport.dead_letters() == []
    assert transport.retry_dead_letter("m") is False
    assert transport.retry_dead_letter("ghost") is False
    assert transport.reserve(["q"], 10, LEASE) == [
        Delivery("n", "q", 4, b"body-n"),
        Delivery("m", "q", 4, b"payload"),
    ]


def test_delete_dead_letter_drops_it_for_good(transport: Transport) -> None:
    transport.publish([env("m"), env("n")])
    deliveries = transport.reserve(["q"], 2, LEASE)
    for delivery in deliveries:
        transport.dead_letter(delivery, "unknown task")
    assert transport.delete_dead_letter("m") is True
    assert [letter.id for letter in transport.dead_letters()] == ["n"]
    assert transport.delete_dead_letter("m") is False
    assert transport.delete_dead_letter("ghost") is False
    assert transport.retry_dead_letter("m") is False
    assert transport.reserve(["q"], 10, LEASE) == []


@pytest.mark.parametrize("priority", [-1, 10])
def test_priority_out_of_range_is_refused_before_anything_is_stored(
    transport: Transport, priority: int
) -> None:
    with pytest.raises(ValueError, match="priority"):
        transport.publish([env("fine"), env("bad", priority=priority)])
    assert transport.queue_length("q") == 0
    assert transport.reserve(["q"], 10, LEASE) == []


def test_an_empty_queue_name_is_refused(transport: Transport) -> None:
    with pytest.raises(ValueError, match="names no queue"):
        transport.publish([env("fine"), env("bad", queue="")])
    assert transport.queue_length("q") == 0


# -- inspection and administration -------------------------------------------------------


def test_queue_length_counts_only_ready_messages(transport: Transport) -> None:
    transport.publish([env("a"), env("b"), env("c"), env("other", "elsewhere")])
    transport.publish([env("later", eta=time.time() + 60)])
    transport.reserve(["q"], 1, LEASE)
    assert transport.queue_length("q") == 2
    assert transport.queue_length("elsewhere") == 1
    assert transport.queue_length("never-used") == 0


def test_purge_drops_ready_messages_only(transport: Transport) -> None:
    transport.publish([env("a"), env("b"), env("c", priority=0), env("keep", "elsewhere")])
    transport.publish([env("later", eta=time.time() + SHORT)])
    [held] = transport.reserve(["q"], 1, LEASE)
    assert transport.purge("q") == 2
    assert transport.purge("q") == 0
    assert transport.queue_length("q") == 0
    assert transport.queue_length("elsewhere") == 1
    transport.release(held.id)  # the held message survives the purge
    assert drain(transport) == [held.id]
    assert ids(eventually(lambda: transport.reserve(["q"], 10, LEASE))) == ["later"]


def test_queue_counts_ready_delayed_and_reserved(transport: Transport) -> None:
    transport.publish([env("a"), env("b"), env("c"), env("other", "elsewhere")])
    transport.publish([env("later", eta=time.time() + 60), env("later2", eta=time.time() + 60)])
    transport.reserve(["q"], 1, LEASE)
    counts = transport.queue_counts(["q", "elsewhere", "never-used"])
    assert (counts["q"].ready, counts["q"].delayed, counts["q"].reserved) == (2, 2, 1)
    assert (counts["elsewhere"].ready, counts["elsewhere"].delayed) == (1, 0)
    assert counts["elsewhere"].reserved == 0
    assert (counts["never-used"].ready, counts["never-used"].delayed) == (0, 0)
    assert transport.queue_counts([]) == {}
