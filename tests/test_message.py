"""The wire format: tagged JSON round-trips, opt-in pickle, compression, signing, size cap."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import OrderedDict, namedtuple
from decimal import Decimal
from enum import Enum

import pytest

from flask_tasks import DecodeError, EncodeError
from flask_tasks.codec import Codec
from flask_tasks.message import Message


class Color(str, Enum):
    RED = "red"


VALUES = [
    (1, 2),
    {"when": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc)},
    dt.datetime(2024, 5, 1, 12, 30),  # naive stays naive
    dt.date(2024, 5, 1),
    dt.time(12, 30, 1),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("1.10"),
    b"\x00\xffbytes",
    {1, 2, 3},
    {"$tuple": "user data that looks like a tag"},
    [[1, (2, (3, 4))], {"nested": (5,)}],
    None,
    "text ünïcode",
    3.5,
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_values_round_trip(value, serializer):
    codec = Codec(serializer=serializer, accept=["json", "pickle"])
    decoded = codec.decode(codec.encode(value))
    assert decoded == value
    assert type(decoded) is type(value)


def test_subclasses_become_their_plain_types():
    point = namedtuple("point", "x y")
    codec = Codec()
    assert codec.decode(codec.encode(point(1, 2))) == (1, 2)
    assert codec.decode(codec.encode(OrderedDict(a=1))) == {"a": 1}
    assert codec.decode(codec.encode(Color.RED)) == "red"


def test_unserializable_value_raises_encode_error_naming_the_type():
    with pytest.raises(EncodeError, match="Object of type object is not JSON serializable"):
        Codec().encode({"user": object()})


@pytest.mark.parametrize("compression", ["zlib", "bz2"])
def test_compression_round_trips_and_shrinks(compression):
    codec = Codec(compression=compression)
    value = {"text": "spam " * 1000}
    data = codec.encode(value)
    assert len(data) < 500
    assert Codec().decode(data) == value  # the header says how to decompress


def test_size_cap():
    codec = Codec(max_bytes=1000)
    with pytest.raises(EncodeError, match="over TASKS_MESSAGE_MAX_BYTES"):
        codec.encode("x" * 2000)


def test_pickle_is_refused_unless_accepted():
    data = Codec(serializer="pickle", accept=["pickle"]).encode([1])
    with pytest.raises(DecodeError, match="not in TASKS_ACCEPT_CONTENT"):
        Codec().decode(data)
    with pytest.raises(EncodeError, match="not listed in TASKS_ACCEPT_CONTENT"):
        Codec().encode([1], serializer="pickle")


def test_signature_checks():
    signed = Codec(secret_keys=["old", "new"])
    data = signed.encode({"task": "x"})
    assert Codec(secret_keys=["new"]).decode(data) == {"task": "x"}
    with pytest.raises(DecodeError, match="signature does not match"):
        Codec(secret_keys=["other"]).decode(data)
    tampered = data.replace(b'"x"', b'"y"')
    with pytest.raises(DecodeError, match="signature does not match"):
        signed.decode(tampered)
    with pytest.raises(DecodeError, match="not signed"):
        signed.decode(Codec().encode({"task": "x"}))


def test_key_rotation_with_fallbacks():
    old = Codec(secret_keys=["old"]).encode("hello")
    rotated = Codec(secret_keys=["old", "new"])  # SECRET_KEY_FALLBACKS = ["old"]
    assert rotated.decode(old) == "hello"


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"ft1 json -\n{}", b"ft1 json - -\n{not json", b"xx1 json - -\n1"]
)
def test_garbage_raises_decode_error(data):
    with pytest.raises(DecodeError):
        Codec().decode(data)


def test_envelope_is_lean_and_validated():
    message = Message(id="1", task="app.add", args=[1, 2])
    data = message.to_dict()
    assert set(data) == {"id", "task", "args", "kwargs", "queue", "priority"}
    assert Message.from_dict(data) == message
    with pytest.raises(DecodeError, match="no task name"):
        Message.from_dict({"id": "1"})
    with pytest.raises(DecodeError, match="unexpected fields"):
        Message.from_dict({"id": "1", "task": "t", "bogus": 1})
    with pytest.raises(DecodeError, match="field 'args' has the wrong type: str"):
        Message.from_dict({"id": "1", "task": "t", "args": "no"})
    with pytest.raises(DecodeError, match="field 'eta' has the wrong type: str"):
        Message.from_dict({"id": "1", "task": "t", "eta": "tomorrow"})
    with pytest.raises(DecodeError, match="field 'chain' has the wrong type: dict"):
        Message.from_dict({"id": "1", "task": "t", "chain": {"task": "x"}})
    with pytest.raises(DecodeError, match="field 'priority' has the wrong type: bool"):
        Message.from_dict({"id": "1", "task": "t", "priority": True})
    with pytest.raises(DecodeError, match="field 'id' is missing"):
        Message.from_dict({"task": "t"})


def test_whether_the_producer_made_the_id_is_not_sent():
    message = Message(id="1", task="app.add", fresh_id=True)
    assert "fresh_id" not in message.to_dict()
    assert Message.from_dict(message.to_dict()).fresh_id is False
    with pytest.raises(DecodeError, match="unexpected fields"):
        Message.from_dict({"id": "1", "task": "t", "fresh_id": True})
    assert Message.from_dict({"id": "1", "task": "t", "eta": None}).eta is None


def test_signatures_are_itsdangerous_signatures():
    """The codec derives its keys once; its signatures stay those of itsdangerous's
    Signer (messages signed by earlier versions still verify, and the reverse)."""
    import hashlib

    from itsdangerous import Signer

    from flask_tasks.codec import _SIGNER_SALT

    signer = Signer([b"old", b"new"], salt=_SIGNER_SALT, digest_method=hashlib.sha256)
    data = Codec(secret_keys=["old", "new"]).encode({"task": "x", "args": [1, "é"]})
    header, payload = data.split(b"\n", 1)
    _magic, serializer, compression, signature = header.split(b" ")
    signed = serializer + b" " + compression + b"\n" + payload
    assert signature == signer.get_signature(signed)
    forged = data.replace(signature, Signer(b"old", salt=_SIGNER_SALT).get_signature(signed))
    with pytest.raises(DecodeError, match="signature"):
        Codec(secret_keys=["old", "new"]).decode(forged)  # another digest: refused


def test_new_ids_are_random_uuid4_strings():
    import uuid

    from flask_tasks.message import new_id

    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for made in ids:
        parsed = uuid.UUID(made)
        assert str(parsed) == made
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
