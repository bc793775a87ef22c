"""What the RabbitMQ transport does beyond (or instead of) the shared contract: where AMQP
differs, the RabbitMQ objects it makes, and its errors and recovery. Real RabbitMQ only
(the session's vhost, a key prefix per test)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from contract_helpers import LEASE, SHORT, drain, env, eventually, ids
from rabbitmq_server import rabbitmqctl
from redis_server import free_port

from flask_tasks.brokers import Delivery, open_transport
from flask_tasks.brokers.amqp import AMQPTransport
from flask_tasks.brokers.amqp_leases import MAX_REMEMBERED, Leases
from flask_tasks.brokers.amqp_link import connection_parameters
from flask_tasks.exceptions import ImproperlyConfigured, OperationalError


@pytest.fixture
def prefix() -> str:
    return f"amqp-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        thing.close()


@pytest.fixture
def transport(amqp_url: str, prefix: str, opened: list[Any]) -> AMQPTransport:
    made = open_transport(amqp_url, key_prefix=prefix)
    assert isinstance(made, AMQPTransport)
    opened.append(made)
    return made


@pytest.fixture
def channel(amqp_url: str, opened: list[Any]) -> Any:
    """A raw pika channel on the same vhost, to look at what the transport made."""
    connection = pika.BlockingConnection(connection_parameters(amqp_url))
    opened.append(connection)
    return connection.channel()


# -- where AMQP differs from the contract ----------------------------------------------------


def test_publishing_a_waiting_id_again_adds_a_second_message(transport: AMQPTransport) -> None:
    transport.publish([env("m", body=b"first")])
    transport.publish([env("m", body=b"second")])
    assert [d.body for d in transport.reserve(["q"], 10, LEASE)] == [b"first", b"second"]


def test_publishing_a_held_id_replaces_the_held_message(transport: AMQPTransport) -> None:
    """What the worker relies on: a retry bound for another queue publishes the held id."""
    transport.publish([env("m", body=b"first")])
    transport.reserve(["q"], 1, SHORT)
    transport.publish([env("m", "other", priority=1, body=b"moved")])
    time.sleep(SHORT + 0.1)
    assert transport.reserve(["q"], 10, LEASE) == []  # the held one was acked
    assert transport.reserve(["other"], 10, LEASE) == [Delivery("m", "other", 1, b"moved")]


def test_release_with_a_new_body_goes_to_the_back(transport: AMQPTransport) -> None:
    transport.publish([env("a"), env("b")])
    transport.reserve(["q"], 1, LEASE)
    transport.release("a", body=b"again")
    assert drain(transport) == ["b", "a"]


def test_a_lease_runs_out_while_its_holder_is_idle(
    transport: AMQPTransport, amqp_url: str, prefix: str, opened: list[Any]
) -> None:
    """The pump thread gives back expired leases within a second, with no call made."""
    other = open_transport(amqp_url, key_prefix=prefix)
    opened.append(other)
    transport.publish([env("m")])
    assert ids(transport.reserve(["q"], 1, 0.2)) == ["m"]
    assert ids(eventually(lambda: other.reserve(["q"], 1, LEASE), timeout=5)) == ["m"]


def test_closing_the_holder_gives_its_messages_back_at_once(
    transport: AMQPTransport, amqp_url: str, prefix: str, opened: list[Any]
) -> None:
    other = open_transport(amqp_url, key_prefix=prefix)
    opened.append(other)
    transport.publish([env("a"), env("b")])
    assert ids(transport.reserve(["q"], 2, LEASE)) == ["a", "b"]
    assert other.reserve(["q"], 10, LEASE) == []
    transport.close()  # as a killed worker's connection closes
    assert ids(eventually(lambda: other.reserve(["q"], 10, LEASE))) == ["a", "b"]


# -- delivery counts and fencing ---------------------------------------------------------------


def test_a_message_whose_holder_died_comes_back_uncounted(
    transport: AMQPTransport, amqp_url: str, prefix: str, opened: list[Any]
) -> None:
    """RabbitMQ requeues it when the connection closes and tells no count (docs: Limits)."""
    other = open_transport(amqp_url, key_prefix=prefix)
    opened.append(other)
    transport.publish([env("m")])
    [first] = transport.reserve(["q"], 1, LEASE)
    transport.close()  # as a worker killed while running it
    [again] = eventually(lambda: other.reserve(["q"], 1, LEASE))
    assert (first.deliveries, again.deliveries) == (1, 1)
    assert again.token != first.token


def test_a_lease_that_ran_out_counts_only_where_it_comes_back(
    transport: AMQPTransport, amqp_url: str, prefix: str, opened: list[Any]
) -> None:
    other = open_transport(amqp_url, key_prefix=prefix)
    opened.append(other)
    transport.publish([env("m")])
    transport.reserve(["q"], 1, SHORT)
    time.sleep(SHORT + 0.05)
    assert transport.reserve(["elsewhere"], 1, LEASE) == []  # gives m back
    [taken] = eventually(lambda: other.reserve(["q"], 1, LEASE))
    assert taken.deliveries == 1  # the other process does not know


def test_a_message_published_again_carries_its_count(
    transport: AMQPTransport, channel: Any, prefix: str
) -> None:
    transport.publish([env("m")])
    transport.reserve(["q"], 1, SHORT)
    time.sleep(SHORT + 0.05)
    [live] = eventually(lambda: transport.reserve(["q"], 1, LEASE))
    assert live.deliveries == 2
    assert transport.release(live, body=b"retry") is True  # a new message, at the back
    method, properties, body = channel.basic_get(f"{prefix}.q")
    assert (body, properties.headers["ft-deliveries"]) == (b"retry", 1)  # less the release
    channel.basic_reject(method.delivery_tag, requeue=True)
    [again] = eventually(lambda: transport.reserve(["q"], 1, LEASE))
    assert (again.body, again.deliveries) == (b"retry", 2)


def test_a_delivery_of_a_connection_lost_since_is_refused(transport: AMQPTransport) -> None:
    transport.publish([env("m")])
    [lost] = transport.reserve(["q"], 1, LEASE)
    transport._main.drop()  # as a network cut: RabbitMQ requeues what it delivered
    [again] = eventually(lambda: transport.reserve(["q"], 1, LEASE))
    assert again.token != lost.token
    assert transport.ack([lost]) == ["m"]
    assert transport.release(lost) is False
    assert transport.ack([again]) == []
    assert transport.reserve(["q"], 1, LEASE) == []


def test_a_delivery_of_another_transport_is_refused(
    transport: AMQPTransport, amqp_url: str, prefix: str, opened: list[Any]
) -> None:
    other = open_transport(amqp_url, key_prefix=prefix)
    opened.append(other)
    transport.publish([env("m")])
    [delivery] = transport.reserve(["q"], 1, LEASE)
    assert other.ack([delivery]) == ["m"]
    assert other.release(delivery) is False
    assert transport.ack([delivery]) == []


def test_counts_of_leases_that_never_came_back_are_bounded() -> None:
    leases = Leases()
    for number in range(MAX_REMEMBERED + 1):
        leases.count(f"m{number}", 1)

    def taken(message_id: str) -> int:
        return leases.add(
            message_id,
            tag=1,
            generation=1,
            deadline=0.0,
            queue="q",
            priority=5,
            body=b"",
            redelivered=True,
            carried=0,
        ).deliveries

    assert (taken("m0"), taken("m1"), taken(f"m{MAX_REMEMBERED}")) == (1, 2, 2)


# -- the RabbitMQ objects ----------------------------------------------------------------------


def test_messages_carry_id_rabbitmq_priority_and_persistence(
    transport: AMQPTransport, channel: Any, prefix: str
) -> None:
    transport.publish([env("m", priority=0), env("n", priority=9)])
    _method, properties, body = channel.basic_get(f"{prefix}.q", auto_ack=True)
    assert (properties.message_id, properties.priority, body) == ("m", 9, b"body-m")
    assert properties.delivery_mode == 2
    _method, properties, _body = channel.basic_get(f"{prefix}.q", auto_ack=True)
    assert (properties.message_id, properties.priority) == ("n", 0)


def test_a_delayed_message_waits_in_the_delay_ladder(
    transport: AMQPTransport, channel: Any, prefix: str
) -> None:
    transport.publish([env("later", eta=time.time() + 3600)])
    assert transport.queue_length("q") == 0
    waiting = [
        channel.queue_declare(f"{prefix}.delay.{level}", passive=True).method.message_count
        for level in range(32)
    ]
    assert sum(waiting) == 1 and waiting.index(1) == 21  # 3,600,000 ms: the highest bit is 2**21


def test_a_message_that_comes_back_early_goes_round_again(
    transport: AMQPTransport, channel: Any, prefix: str
) -> None:
    transport.publish([env("warm-up")])  # declares the queue
    drain(transport)
    eta = time.time() + 0.5  # as if the publisher's clock were ahead of this host's
    properties = pika.BasicProperties(
        message_id="m", priority=4, headers={"ft-queue": "q", "ft-eta": repr(eta)}
    )
    channel.basic_publish("", f"{prefix}.q", b"early", properties)
    assert transport.reserve(["q"], 10, LEASE) == []
    delivered = eventually(lambda: transport.reserve(["q"], 10, LEASE))
    assert time.time() >= eta
    assert delivered == [Delivery("m", "q", 5, b"early")]


def test_messages_rabbitmq_dead_letters_itself_are_listed(
    transport: AMQPTransport, channel: Any, prefix: str
) -> None:
    transport.publish([env("m", priority=2)])
    method, _properties, _body = channel.basic_get(f"{prefix}.q")
    channel.basic_reject(method.delivery_tag, requeue=False)  # another client gives up on it
    [letter] = eventually(transport.dead_letters)
    assert (letter.id, letter.queue, letter.priority) == ("m", "q", 2)
    assert letter.reason == "RabbitMQ: rejected"
    assert transport.retry_dead_letter("m") is True
    assert drain(transport) == ["m"]


# -- URLs, options and errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "vhost"), [("", "/"), ("/", "/"), ("//", "/"), ("/%2F", "/"), ("/app", "app")]
)
def test_the_vhost_is_the_path(path: str, vhost: str) -> None:
    assert connection_parameters(f"amqp://guest:guest@rabbit:5672{path}").virtual_host == vhost


def test_an_option_pika_does_not_know_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="'hearbeat', which is no pika"):
        connection_parameters("amqp://localhost//", hearbeat=30)
    assert connection_parameters("amqp://localhost//", heartbeat=30).heartbeat == 30


def test_an_unreachable_server_is_an_operational_error_then_backoff(opened: list[Any]) -> None:
    transport = open_transport(f"amqp://guest:secret@127.0.0.1:{free_port()}//")
    opened.append(transport)
    with pytest.raises(
        OperationalError, match=r"Could not connect to RabbitMQ at amqp://guest:\*\*\*@"
    ) as first:
        transport.ping()
    assert "secret" not in str(first.value)
    with pytest.raises(OperationalError, match="unreachable .* next attempt in"):
        transport.reserve(["q"], 1, LEASE)


def test_a_queue_made_with_other_arguments_is_named_with_what_to_do(
    transport: AMQPTransport, channel: Any, prefix: str
) -> None:
    channel.queue_declare(f"{prefix}.q", durable=True)  # no priorities: another program's
    with pytest.raises(
        OperationalError, match="inequivalent arg .* delete it, or set another TASKS_KEY_PREFIX"
    ):
        transport.reserve(["q"], 1, LEASE)


def test_a_connection_closed_by_the_server_is_reopened(transport: AMQPTransport) -> None:
    """As after a RabbitMQ restart: what was held is requeued by the server; acking it
    later is harmless; the next call connects again."""
    transport.publish([env("m")])
    assert ids(transport.reserve(["q"], 1, LEASE)) == ["m"]
    local_port = transport._main.connection._impl._transport._sock.getsockname()[1]
    listed = rabbitmqctl("list_connections", "pid", "name", "-q").splitlines()
    [pid] = [line.split("\t")[0] for line in listed if f":{local_port} ->" in line]
    rabbitmqctl("close_connection", pid, "a test closes it")

    def taken_again() -> list[Delivery]:
        try:
            return transport.reserve(["q"], 1, LEASE)
        except OperationalError:  # the first call after the close finds it closed
            return []

    assert ids(eventually(taken_again, timeout=10)) == ["m"]
    transport.ack(["m"])
    assert transport.reserve(["q"], 1, LEASE) == []


def test_queue_counts_tell_the_ready_count_only(transport: Any) -> None:
    transport.publish([env("a"), env("b"), env("c", eta=time.time() + 60)])
    counts = transport.queue_counts(["q"])["q"]
    assert (counts.ready, counts.delayed, counts.reserved) == (2, None, None)
