"""The transport contract, part 3: delivery counts and fencing by lease token.

Every test runs on every transport (``TRANSPORTS`` in ``conftest.py``); the joint steps
with records on every broker. The contract is ``Delivery.deliveries``, ``Delivery.token``
and the *fencing* paragraph of ``flask_tasks.brokers.base``.
"""

from __future__ import annotations

import time

from contract_helpers import LEASE, SHORT, env, eventually

from flask_tasks.brokers import Broker, Delivery, Transport


def _taken_over(transport: Transport) -> tuple[Delivery, Delivery]:
    """Reserve ``m`` under a short lease, let it run out, reserve it again: (stale, live)."""
    transport.publish([env("m")])
    [stale] = transport.reserve(["q"], 1, SHORT)
    time.sleep(SHORT + 0.05)
    [live] = eventually(lambda: transport.reserve(["q"], 1, LEASE))
    return stale, live


def test_first_delivery_counts_one_with_a_token(transport: Transport) -> None:
    transport.publish([env("m")])
    [delivery] = transport.reserve(["q"], 1, LEASE)
    assert delivery.deliveries == 1
    assert isinstance(delivery.token, str) and delivery.token


def test_a_lease_that_runs_out_counts_and_changes_the_token(transport: Transport) -> None:
    stale, live = _taken_over(transport)
    assert (stale.deliveries, live.deliveries) == (1, 2)
    assert live.token != stale.token
    time.sleep(SHORT + 0.05)
    assert live.deliveries == 2  # a frozen dataclass: the count is the one reserved with


def test_counts_grow_with_each_lost_lease(transport: Transport) -> None:
    transport.publish([env("m")])
    seen = []
    for _ in range(3):
        [delivery] = eventually(lambda: transport.reserve(["q"], 1, SHORT))
        seen.append(delivery.deliveries)
    assert seen == [1, 2, 3]


def test_a_release_does_not_count(transport: Transport) -> None:
    transport.publish([env("m")])
    [first] = transport.reserve(["q"], 1, LEASE)
    assert transport.release(first) is True
    [again] = transport.reserve(["q"], 1, LEASE)
    assert again.deliveries == 1
    assert again.token != first.token


def test_a_release_with_a_delay_does_not_count(transport: Transport) -> None:
    transport.publish([env("m")])
    [first] = transport.reserve(["q"], 1, LEASE)
    transport.release(first, body=b"retry", eta=time.time() + SHORT)
    [again] = eventually(lambda: transport.reserve(["q"], 1, LEASE))
    assert (again.body, again.deliveries) == (b"retry", 1)


def test_publishing_again_resets_the_count(transport: Transport) -> None:
    _stale, live = _taken_over(transport)
    assert live.deliveries == 2
    transport.publish([env("m")])
    [fresh] = transport.reserve(["q"], 1, LEASE)
    assert fresh.deliveries == 1


def test_a_dead_letter_retried_starts_counting_again(transport: Transport) -> None:
    _stale, live = _taken_over(transport)
    transport.dead_letter(live, "poison")
    assert transport.retry_dead_letter("m")
    [fresh] = transport.reserve(["q"], 1, LEASE)
    assert fresh.deliveries == 1


def test_a_stale_ack_is_refused_and_changes_nothing(transport: Transport) -> None:
    stale, live = _taken_over(transport)
    assert transport.ack([stale]) == ["m"]
    assert transport.reserve(["q"], 1, LEASE) == []  # still held by the live lease
    assert transport.ack([live]) == []
    time.sleep(SHORT + 0.05)
    assert transport.reserve(["q"], 1, LEASE) == []  # gone for good


def test_an_ack_after_someone_else_settled_it_is_refused(transport: Transport) -> None:
    stale, live = _taken_over(transport)
    assert transport.ack([live]) == []
    assert transport.ack([stale]) == ["m"]


def test_a_lease_that_ran_out_but_was_not_taken_over_may_still_ack(
    transport: Transport,
) -> None:
    transport.publish([env("m")])
    [late] = transport.reserve(["q"], 1, SHORT)
    time.sleep(SHORT + 0.05)
    assert transport.ack([late]) == []  # nobody else holds it: the outcome stands
    assert transport.reserve(["q"], 1, LEASE) == []


def test_a_bare_id_acks_whatever_lease_holds_it(transport: Transport) -> None:
    _stale, _live = _taken_over(transport)
    assert transport.ack(["m"]) == []
    assert transport.reserve(["q"], 1, LEASE) == []


def test_a_stale_release_is_refused(transport: Transport) -> None:
    stale, live = _taken_over(transport)
    assert transport.release(stale, body=b"stale retry") is False
    assert transport.reserve(["q"], 1, LEASE) == []  # the live lease still holds it
    assert transport.release(live) is True
    [again] = transport.reserve(["q"], 1, LEASE)
    assert again.body == b"body-m"


def test_a_stale_extend_does_not_renew_the_live_lease(transport: Transport) -> None:
    transport.publish([env("m")])
    [stale] = transport.reserve(["q"], 1, SHORT)
    time.sleep(SHORT + 0.05)
    [live] = eventually(lambda: transport.reserve(["q"], 1, SHORT))
    transport.extend([stale], LEASE)
    [third] = eventually(lambda: transport.reserve(["q"], 1, LEASE))
    assert third.deliveries == 3
    transport.extend([live], LEASE)  # a lost lease is not renewed either
    time.sleep(SHORT + 0.05)
    assert transport.reserve(["q"], 1, LEASE) == []


def test_extend_with_the_live_token_keeps_the_lease(transport: Transport) -> None:
    transport.publish([env("m")])
    [delivery] = transport.reserve(["q"], 1, SHORT)
    transport.extend([delivery], LEASE)
    time.sleep(SHORT + 0.05)
    assert transport.reserve(["q"], 1, LEASE) == []
    assert transport.ack([delivery]) == []


# -- joint steps --------------------------------------------------------------------------


def test_a_stale_settlement_stores_no_record(broker: Broker) -> None:
    stale, live = _taken_over(broker)
    assert broker.ack_with_records([(stale, b"stale outcome")], 60) == ["m"]
    assert broker.get_result("m") is None
    assert broker.ack_with_records([(live, b"live outcome")], 60) == []
    assert broker.get_result("m") == b"live outcome"
    assert broker.ack_with_records([(stale, b"late")], 60) == ["m"]
    assert broker.get_result("m") == b"live outcome"


def test_settlements_are_fenced_one_by_one(broker: Broker) -> None:
    stale, _live = _taken_over(broker)
    broker.publish([env("n")])
    [other] = broker.reserve(["q"], 1, LEASE)
    refused = broker.ack_with_records([(stale, b"stale"), (other, b"fine")], 60)
    assert refused == ["m"]
    assert broker.get_results(["m", "n"]) == [None, b"fine"]


def test_a_stale_release_stores_no_record(broker: Broker) -> None:
    stale, live = _taken_over(broker)
    assert broker.release_with_record(stale, b"retry", time.time() + 60, b"RETRY", 60) is False
    assert broker.get_result("m") is None
    assert broker.release_with_record(live, None, None, b"RETRY", 60) is True
    assert broker.get_result("m") == b"RETRY"
