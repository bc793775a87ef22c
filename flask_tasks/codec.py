"""The codec: how messages and result records become bytes, and back.

Wire format of every stored value (messages and result records)::

    b"ft1 <serializer> <compression or -> <signature or ->\\n" + payload

The header is plain text so that a broker, a dead letter or a person with ``redis-cli``
can tell what a value is; the signature (itsdangerous, HMAC-SHA256, keyed by
``SECRET_KEY`` with ``SECRET_KEY_FALLBACKS``) covers serializer, compression and payload.

JSON is the default. Values JSON lacks round-trip through one-key tag objects:

=================  ===========================================
Python             JSON
=================  ===========================================
``tuple``          ``{"$tuple": [...]}``
``datetime``       ``{"$datetime": "2024-05-01T12:00:00+00:00"}``
``date``/``time``  ``{"$date": "..."}`` / ``{"$time": "..."}``
``UUID``           ``{"$uuid": "..."}``
``Decimal``        ``{"$decimal": "1.10"}``
``bytes``          ``{"$bytes": "<base64>"}``
``set``            ``{"$set": [...]}``
=================  ===========================================

A dict whose only key starts with ``$`` travels as ``{"$dict": [[key, value]]}`` so user
data is never mistaken for a tag. Dict keys that are not strings follow JSON's rules (they
become strings).
"""

from __future__ import annotations

import base64
import bz2
import datetime as dt
import hashlib
import hmac
import json
import pickle
import zlib
from collections.abc import Sequence
from decimal import Decimal
from enum import Enum
from typing import Any, Callable
from uuid import UUID

from itsdangerous import Signer

from .exceptions import DecodeError, EncodeError, ImproperlyConfigured

_MAGIC = b"ft1"
_SIGNER_SALT = "flask-tasks.message"

# -- tagged JSON ------------------------------------------------------------------------


def _tag_datetime(value: dt.datetime) -> Any:
    return {"$datetime": value.isoformat()}


_TAGGERS: dict[type, Callable[[Any], Any]] = {
    dt.datetime: _tag_datetime,
    dt.date: lambda value: {"$date": value.isoformat()},
    dt.time: lambda value: {"$time": value.isoformat()},
    UUID: lambda value: {"$uuid": str(value)},
    Decimal: lambda value: {"$decimal": str(value)},
    bytes: lambda value: {"$bytes": base64.b64encode(value).decode("ascii")},
}

_UNTAGGERS: dict[str, Callable[[Any], Any]] = {
    "$tuple": tuple,
    "$set": set,
    "$datetime": dt.datetime.fromisoformat,
    "$date": dt.date.fromisoformat,
    "$time": dt.time.fromisoformat,
    "$uuid": UUID,
    "$decimal": Decimal,
    "$bytes": base64.b64decode,
    "$dict": dict,
}

_PLAIN = (str, int, float, bool, type(None))


def to_tagged(value: Any) -> Any:
    """``value`` as plain JSON types, tagging what JSON cannot hold (see module docs)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list:
        return [to_tagged(item) for item in value]
    if kind is dict:
        if len(value) == 1:
            key = next(iter(value))
            if isinstance(key, str) and key[:1] == "$":  # escape user data shaped like a tag
                return {"$dict": [[key, to_tagged(value[key])]]}
        return {key: to_tagged(item) for key, item in value.items()}
    if kind is tuple:
        return {"$tuple": [to_tagged(item) for item in value]}
    tagger = _TAGGERS.get(kind)
    if tagger is not None:
        return tagger(value)
    return _to_tagged_subclass(value)


def _to_tagged_subclass(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return {"$set": [to_tagged(item) for item in value]}
    if isinstance(value, Enum):
        return to_tagged(value.value)
    for base in (str, int, float):  # enums and other subclasses of plain types
        if isinstance(value, base):
            return base(value)
    for container in (dict, list, tuple):  # OrderedDict, namedtuple, ...
        if isinstance(value, container):
            return to_tagged(container(value))
    for kind, tagger in _TAGGERS.items():
        if isinstance(value, kind):
            return tagger(value)
    raise EncodeError(
        f"Object of type {type(value).__name__} is not JSON serializable: {value!r:.80}. "
        "Pass plain data (ids rather than objects), or list 'pickle' in TASKS_ACCEPT_CONTENT "
        "and set TASKS_SERIALIZER = 'pickle'"
    )


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        key = next(iter(obj))
        untagger = _UNTAGGERS.get(key)
        if untagger is not None:
            return untagger(obj[key])
    return obj


class _Serializer:
    def __init__(self, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> None:
        self.dumps = dumps
        self.loads = loads


#: One encoder for every call: ``json.dumps`` with options builds a new one each time,
#: which costs as much as encoding a small message. NaN and Infinity are refused: they
#: are not JSON, and a browser reading a result would fail on them.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _json_dumps(value: Any) -> bytes:
    try:
        text = _JSON_ENCODER.encode(to_tagged(value))
    except ValueError as error:
        if "JSON compliant" not in str(error):
            raise
        raise EncodeError(
            "NaN and Infinity are not JSON (a browser could not read them); send None or "
            "a string instead, or use another serializer"
        ) from None
    return text.encode()


#: A str as ``_JSON_ENCODER`` writes it (``ensure_ascii=False``).
_json_string: Callable[[str], str] = json.encoder.encode_basestring
#: Empty containers as ``_json_dumps`` writes them (a splicer skips the encoder for them).
_EMPTY: dict[type, bytes] = {list: b"[]", dict: b"{}"}


def _json_loads(data: bytes) -> Any:
    if b'"$' not in data:  # no tag can be present: skip the per-object hook
        return json.loads(data)
    return json.loads(data, object_hook=_untag)


def _msgpack() -> _Serializer:
    try:
        import msgpack
    except ImportError as error:
        raise ImproperlyConfigured(
            "TASKS_SERIALIZER 'msgpack' needs the msgpack package: pip install Flask-Tasks[msgpack]"
        ) from error

    def loads(data: bytes) -> Any:
        return msgpack.unpackb(data, object_hook=_untag, strict_map_key=False)

    return _Serializer(lambda value: msgpack.packb(to_tagged(value)), loads)


def _serializer(name: str) -> _Serializer:
    if name == "json":
        return _Serializer(_json_dumps, _json_loads)
    if name == "pickle":
        return _Serializer(lambda value: pickle.dumps(value, protocol=4), pickle.loads)
    return _msgpack()


_COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "zlib": (zlib.compress, zlib.decompress),
    "bz2": (bz2.compress, bz2.decompress),
}


def _signature(mac: hmac.HMAC, value: bytes) -> bytes:
    """itsdangerous's signature of ``value`` (URL-safe base64 of the HMAC, unpadded)."""
    copy = mac.copy()
    copy.update(value)
    return base64.urlsafe_b64encode(copy.digest()).rstrip(b"=")


def _as_bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


class Codec:
    """Encodes values to the wire format and back, with one app's settings.

    ``secret_keys`` lists keys oldest first (``SECRET_KEY_FALLBACKS`` then
    ``SECRET_KEY``); the newest signs and all verify. With no keys, nothing is signed.
    """

    def __init__(
        self,
        serializer: str = "json",
        accept: Sequence[str] = ("json",),
        compression: str | None = None,
        secret_keys: Sequence[str | bytes] = (),
        max_bytes: int = 1048576,
    ) -> None:
        self.serializer = serializer
        self.compression = compression
        self.max_bytes = max_bytes
        self.accept = frozenset(accept)
        self._serializers = {name: _serializer(name) for name in self.accept | {serializer}}
        self._signer = (
            Signer(
                [_as_bytes(key) for key in secret_keys],
                salt=_SIGNER_SALT,
                digest_method=hashlib.sha256,
            )
            if secret_keys
            else None
        )
        # The signer's HMACs with their keys derived once (itsdangerous derives the key
        # on every call): the same signatures, a few microseconds less per message.
        #: Newest key first: the first signs, any verifies.
        self._macs = (
            [
                hmac.new(self._signer.derive_key(key), digestmod=hashlib.sha256)
                for key in reversed(self._signer.secret_keys)
            ]
            if self._signer is not None
            else []
        )

        #: (serializer, compression) -> the header up to the signature, and the signing
        #: HMAC already fed the signed header line (None when nothing is signed).
        self._heads: dict[tuple[str, str | None], tuple[bytes, hmac.HMAC | None]] = {}

    @property
    def signs(self) -> bool:
        return self._signer is not None

    def _head(self, serializer: str, compression: str | None) -> tuple[bytes, hmac.HMAC | None]:
        head = b"%s %s" % (serializer.encode(), (compression or "-").encode())
        mac = None
        if self._macs:
            mac = self._macs[0].copy()
            mac.update(head + b"\n")
        made = self._heads[serializer, compression] = (b"%s %s " % (_MAGIC, head), mac)
        return made

    def encode(
        self, value: Any, serializer: str | None = None, compression: str | None = None
    ) -> bytes:
        """Serialize, compress and sign ``value``; raises EncodeError on failure."""
        serializer = serializer or self.serializer
        compression = compression if compression is not None else self.compression
        dumps = self._serializers.get(serializer) or self._unaccepted_serializer(serializer)
        try:
            payload = dumps.dumps(value)
        except EncodeError:
            raise
        except Exception as error:
            raise EncodeError(f"Cannot serialize with {serializer}: {error}") from error
        return self.frame(payload, serializer, compression)

    def frame(self, payload: bytes, serializer: str, compression: str | None) -> bytes:
        """A serialized payload compressed, signed and headed (``EncodeError``)."""
        if compression:
            if compression not in _COMPRESSORS:
                raise EncodeError(f"Unknown compression {compression!r}; use zlib or bz2")
            payload = _COMPRESSORS[compression][0](payload)
        prefix, mac = self._heads.get((serializer, compression)) or self._head(
            serializer, compression
        )
        if mac is None:
            data = prefix + b"-\n" + payload
        else:
            signing = mac.copy()
            signing.update(payload)
            signature = base64.urlsafe_b64encode(signing.digest()).rstrip(b"=")
            data = b"".join((prefix, signature, b"\n", payload))
        if len(data) > self.max_bytes:
            raise EncodeError(
                f"Message is {len(data)} bytes, over TASKS_MESSAGE_MAX_BYTES ({self.max_bytes}); "
                "store large data elsewhere and pass a reference"
            )
        return data

    def splicer(
        self,
        value: dict[str, Any],
        holes: Sequence[str],
        serializer: str | None = None,
        compression: str | None = None,
    ) -> Callable[..., bytes] | None:
        """What ``encode(value)`` gives for many values of one shape, faster: the dict
        ``value`` is serialized once, and each call serializes only the values of its keys
        ``holes`` (given in that order) and puts them in place; the same bytes as
        ``encode``. None unless the serializer is JSON (the default)."""
        if (serializer or self.serializer) != "json" or "json" not in self._serializers:
            return None
        compression = compression if compression is not None else self.compression
        marks = {name: f"\x00{_MAGIC.decode()}:{name}\x00" for name in holes}
        order = [name for name in value if name in marks]
        if len(order) != len(marks):
            return None
        text = _json_dumps({key: marks.get(key, item) for key, item in value.items()})
        parts = [text]
        for name in order:
            pieces = parts[-1].split(_JSON_ENCODER.encode(marks[name]).encode())
            if len(pieces) != 2:  # the mark also in a fixed value: not spliceable
                return None
            parts[-1:] = pieces
        frame, head, tail = self.frame, parts[0], parts[1:]

        def encode(*values: Any) -> bytes:
            chunks = [head]
            try:
                for item, part in zip(values, tail):
                    if type(item) is str:  # an id: what the encoder writes, without it
                        chunks += (_json_string(item).encode(), part)
                    else:
                        empty = None if item else _EMPTY.get(type(item))
                        chunks += (empty or _json_dumps(item), part)
            except EncodeError:
                raise
            except Exception as error:
                raise EncodeError(f"Cannot serialize with json: {error}") from error
            return frame(b"".join(chunks), "json", compression)

        return encode

    def decode(self, data: bytes) -> Any:
        """Verify, decompress and deserialize; raises DecodeError with the reason."""
        newline = data.find(b"\n")
        parts = data[:newline].split(b" ") if newline > 0 else []
        if len(parts) != 4 or parts[0] != _MAGIC:
            raise DecodeError("not a Flask-Tasks message (bad header)")
        _magic, serializer_raw, compression_raw, signature = parts
        payload = data[newline + 1 :]
        serializer = serializer_raw.decode("ascii", "replace")
        if self._signer is not None:
            if signature == b"-":
                raise DecodeError("message is not signed, and this app requires signatures")
            head = serializer_raw + b" " + compression_raw
            signed = head + b"\n" + payload
            if not any(
                hmac.compare_digest(_signature(mac, signed), signature) for mac in self._macs
            ):
                raise DecodeError("message signature does not match (tampered, or another key)")
        if serializer not in self.accept:
            raise DecodeError(
                f"content type {serializer!r} is not in TASKS_ACCEPT_CONTENT {sorted(self.accept)}"
            )
        compression = compression_raw.decode("ascii", "replace")
        try:
            if compression != "-":
                payload = _COMPRESSORS[compression][1](payload)
            return self._serializers[serializer].loads(payload)
        except Exception as error:
            raise DecodeError(f"cannot decode {serializer} payload: {error}") from error

    def _unaccepted_serializer(self, name: str) -> _Serializer:
        raise EncodeError(
            f"Serializer {name!r} is not listed in TASKS_ACCEPT_CONTENT {sorted(self.accept)}"
        )
