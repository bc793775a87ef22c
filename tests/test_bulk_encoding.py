"""Many messages of one shape (a group's members): encoded from a template of the shape
(``Codec.splicer``), the same bytes as one by one; their ids made by ``freeze`` are fresh."""

from __future__ import annotations

import datetime as dt
import gc
import math

import pytest
from flask import Flask

from flask_tasks import EncodeError, Tasks, chord, group
from flask_tasks.codec import Codec
from flask_tasks.message import Message

tasks = Tasks()


@tasks.task
def add(x, y=0):
    return x + y


@tasks.task
def total(values):
    return sum(values)


ARGUMENTS = [
    ((), {}),
    ((1, 2), {"y": 3}),
    ([(1, 2), {1, 2}], {"$ref": "not a tag"}),
    ((dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc), b"\x00"), {"when": dt.date(2024, 5, 1)}),
    ((float("inf"),), {}),  # refused, as encode() refuses it
]


@pytest.mark.parametrize(
    "codec",
    [
        Codec(),
        Codec(secret_keys=["old", "new"]),
        Codec(compression="zlib", secret_keys=["key"]),
    ],
)
def test_a_splicer_gives_the_bytes_encode_gives(codec: Codec) -> None:
    shape = Message(id="", task="t", queue="q", group_id="g", chord={"size": 2}).to_dict()
    splice = codec.splicer(shape, ("id", "args", "kwargs"))
    assert splice is not None
    for args, kwargs in ARGUMENTS:
        value = {**shape, "id": "id-1", "args": list(args), "kwargs": kwargs}
        if any(isinstance(a, float) and math.isinf(a) for a in args):
            with pytest.raises(EncodeError, match="NaN and Infinity"):
                splice("id-1", list(args), kwargs)
            continue
        assert splice("id-1", list(args), kwargs) == codec.encode(value)
        assert codec.decode(splice("id-1", list(args), kwargs)) == codec.decode(codec.encode(value))


def test_a_value_json_cannot_hold_raises_encode_error() -> None:
    splice = Codec().splicer({"id": "", "args": []}, ("id", "args"))
    assert splice is not None
    with pytest.raises(EncodeError, match="not JSON serializable"):
        splice("x", [object()])
    with pytest.raises(EncodeError, match="Cannot serialize with json"):
        splice("x", [{(1, 2): "a tuple key"}])


def test_no_splicer_for_other_serializers_or_marked_values() -> None:
    pickling = Codec(serializer="pickle", accept=["pickle"])
    assert pickling.splicer({"id": ""}, ("id",)) is None
    assert Codec().splicer({"id": ""}, ("id",), serializer="pickle") is None
    assert Codec().splicer({"id": ""}, ("id", "missing")) is None
    assert Codec().splicer({"id": "", "other": "\x00ft1:id\x00"}, ("id",)) is None


@pytest.fixture
def app() -> Flask:
    app = Flask("bulk_encoding")
    app.config.update(TASKS_BROKER_URL="memory://", SECRET_KEY="s")
    tasks.init_app(app)
    return app


def _published(app: Flask, workflow) -> list:
    broker = app.extensions["tasks"].transport
    sent: list = []
    original = broker.publish_with_records

    def record(envelopes, records, ttl):
        sent.extend(envelopes)
        original(envelopes, records, ttl)

    broker.publish_with_records = record
    with app.app_context():
        workflow.apply_async()
    return sent


def test_a_group_publishes_what_message_by_message_encoding_gives(app: Flask) -> None:
    members = [add.s(i, y=i) for i in range(5)]
    members += [add.s(1).set(queue="other"), total.s([1]), add.s(2).set(priority=2)]
    members += [add.s(3, y=dt.date(2024, 5, 1)) for _ in range(3)]
    sent = _published(app, group(members))
    producer = app.extensions["tasks"].producer
    codec = app.extensions["tasks"].codec
    assert len(sent) == len(members)
    for envelope, member in zip(sent, members):
        message = Message.from_dict(codec.decode(envelope.body))
        assert message.task == member.task and message.args == list(member.args)
        assert envelope.body == producer.encode(message)
        assert envelope.fresh  # made by freeze() for this publish
    assert [envelope.queue for envelope in sent[5:8]] == ["other", "default", "default"]
    assert sent[7].priority == 2


def test_a_chords_members_share_one_encoded_chord(app: Flask) -> None:
    sent = _published(app, chord([add.s(i, i) for i in range(4)], total.s()))
    codec = app.extensions["tasks"].codec
    decoded = [codec.decode(envelope.body) for envelope in sent[:4]]
    assert all(d["chord"] == decoded[0]["chord"] for d in decoded)
    assert decoded[0]["chord"]["results"] == [envelope.id for envelope in sent[:4]]
    assert all(envelope.fresh for envelope in sent[:4])


def test_a_member_with_its_own_id_is_not_fresh(app: Flask) -> None:
    sent = _published(app, group(add.s(1).set(task_id="mine"), add.s(2)))
    assert [(envelope.id == "mine", envelope.fresh) for envelope in sent] == [
        (True, False),
        (False, True),
    ]


def test_the_garbage_collector_is_left_as_it_was(app: Flask) -> None:
    with app.app_context():
        assert gc.isenabled()
        group(add.s(i) for i in range(3)).apply_async()
        assert gc.isenabled()
        gc.disable()
        try:
            group(add.s(i) for i in range(3)).apply_async()
            assert not gc.isenabled()
        finally:
            gc.enable()
        with pytest.raises(TypeError):
            group(add.s(1), object())  # raised while the collector was paused
        assert gc.isenabled()
