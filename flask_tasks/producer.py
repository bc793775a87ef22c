"""``Producer``: turns a call into a message and publishes it.

Building (routing, options, parent ids), encoding and signing (``EncodeError`` is raised
here, before anything is sent), recording PENDING in the store, the publish signals, and
the retry policy while the broker is unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, Callable, Optional, cast

from . import signals
from .brokers import Connections, Envelope
from .brokers.base import hide_password
from .codec import Codec
from .config import TasksConfig
from .exceptions import OperationalError
from .message import Message, current_request, new_id, to_timestamp
from .records import Record

#: Publishing retry policy when the broker is unreachable (as in Celery).
DEFAULT_RETRY_POLICY: Mapping[str, Any] = {
    "max_retries": 3,
    "interval_start": 0.0,
    "interval_step": 0.2,
    "interval_max": 1.0,
}


#: (task options, queue, priority, expires, ignore_result, serializer, compression).
_Defaults = tuple[Mapping[str, Any], str, Any, Any, Any, Optional[str], Optional[str]]

#: Writes encoded messages and their records somewhere: ``(envelopes, records, ttl)``.
Write = Callable[[Sequence[Envelope], Mapping[str, bytes], float], None]


@dataclass
class Batch:
    """Messages encoded for one publish: their envelopes and PENDING records."""

    messages: list[Message] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    records: dict[str, bytes] = field(default_factory=dict)
    #: False: the messages are not kept once encoded (the publish signals have no
    #: receivers, and nothing names them): a large group then leaves no garbage for the
    #: collector to walk through while it is encoded.
    keep_messages: bool = True

    def add(self, message: Message, body: bytes) -> None:
        if self.keep_messages:
            self.messages.append(message)
        self.envelopes.append(
            Envelope(
                message.id, message.queue, body, message.priority, message.eta, message.fresh_id
            )
        )

    def extend(self, other: Batch) -> None:
        self.messages += other.messages
        self.envelopes += other.envelopes
        self.records.update(other.records)


class Producer:
    """Publishes the messages of one app through its transport, with PENDING records in
    its store."""

    def __init__(self, config: TasksConfig, codec: Codec, connections: Connections) -> None:
        self.config = config
        self.codec = codec
        self.connections = connections
        self._routes: dict[str, tuple[Optional[str], Optional[int]]] = {}
        self._pending: dict[str, bytes] = {}
        #: Task name -> its defaults, for the options mapping they were made from.
        self._defaults: dict[str, _Defaults] = {}

    # -- building -------------------------------------------------------------------------

    def route(self, name: str) -> tuple[Optional[str], Optional[int]]:
        """(queue, priority) from ``TASKS_ROUTES`` for a task name (glob patterns allowed)."""
        cached = self._routes.get(name)
        if cached is None:
            cached = (None, None)
            for pattern, target in self.config.routes.items():
                if pattern == name or fnmatchcase(name, pattern):
                    if isinstance(target, str):
                        cached = (target, None)
                    else:
                        cached = (target.get("queue"), target.get("priority"))
                    break
            self._routes[name] = cached
        return cached

    def message(
        self,
        name: str,
        args: Optional[Sequence[Any]],
        kwargs: Optional[Mapping[str, Any]],
        options: Mapping[str, Any],
        task_options: Mapping[str, Any],
    ) -> Message:
        """The message for one call: ``options`` (``apply_async``'s), then the routes,
        then the task's own options (``task_options``, annotations applied)."""
        get = options.get
        defaults = self._defaults.get(name)
        if defaults is None or defaults[0] is not task_options:
            defaults = self._defaults[name] = self._task_defaults(name, task_options)
        _options, queue, priority, expires, ignore_result, serializer, compression = defaults
        queue = get("queue") or queue
        chosen = get("priority")
        if chosen is not None:
            priority = chosen
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9:
            raise ValueError(
                f"priority of {name} must be an int from 0 (highest) to 9, got {priority!r}"
            )
        chosen = get("expires")
        if chosen is not None:
            expires = chosen
        chosen = get("ignore_result")
        if chosen is not None:
            ignore_result = chosen
        parent = current_request()
        parent_id = parent.id if parent is not None and not parent.called_directly else None
        task_id = get("task_id")
        headers = get("headers")
        chain = get("chain")
        return Message(
            id=task_id or new_id(),
            task=name,
            args=list(args) if args else [],
            kwargs=dict(kwargs) if kwargs else {},
            queue=queue,
            priority=priority,
            eta=to_timestamp(get("eta"), get("countdown")),
            expires=to_timestamp(expires) if expires is not None else None,
            headers=dict(headers) if headers else {},
            parent_id=parent_id,
            root_id=parent.root_id if parent_id and parent else None,
            group_id=get("group_id"),
            ignore_result=bool(ignore_result),
            link=_signature_dicts(get("link")),
            link_error=_signature_dicts(get("link_error")),
            chain=list(chain) if chain else [],
            chord=get("chord"),
            serializer=get("serializer") or serializer,
            compression=get("compression") or compression,
            fresh_id=not task_id,
        )

    @staticmethod
    def alike(
        template: Message,
        task_id: str,
        args: Optional[Sequence[Any]],
        kwargs: Optional[Mapping[str, Any]],
    ) -> Message:
        """The message ``message()`` would build for another call of ``template``'s task
        with the same options but ``task_id`` (made by the caller), ``args`` and
        ``kwargs``: at a fraction of its cost, for the members of a group."""
        made: Message = object.__new__(Message)
        made.__dict__.update(template.__dict__)
        made.id = task_id
        made.args = list(args) if args else []
        made.kwargs = dict(kwargs) if kwargs else {}
        made.headers, made.link, made.link_error, made.chain = {}, [], [], []
        made.fresh_id = False
        return made

    def _task_defaults(self, name: str, task_options: Mapping[str, Any]) -> _Defaults:
        """What a call of ``name`` gets when ``apply_async`` says nothing: the routes,
        then ``task_options``, then the app's defaults (made once per task)."""
        route_queue, route_priority = self.route(name)
        return (
            task_options,
            route_queue or task_options.get("queue") or self.config.default_queue,
            _first_set(route_priority, task_options.get("priority"), 5),
            task_options.get("expires"),
            task_options.get("ignore_result"),
            task_options.get("serializer"),
            task_options.get("compression"),
        )

    def encode(self, message: Message) -> bytes:
        """The message as bytes: serialized, compressed and signed (``EncodeError``)."""
        return self.codec.encode(message.to_dict(), message.serializer, message.compression)

    def pending_record(self, message: Message) -> bytes:
        """The PENDING record of a message; the same bytes for every top-level call of a
        task, so they are encoded once."""
        if message.parent_id is not None:
            return Record.pending(message.task, message.parent_id).encode(self.codec)
        record = self._pending.get(message.task)
        if record is None:
            record = self._pending[message.task] = Record.pending(message.task).encode(self.codec)
        return record

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self,
        messages: Iterable[Message],
        *,
        retry: bool = True,
        retry_policy: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Encode every message (raising ``EncodeError`` before anything is sent), then
        publish them in one step, recording PENDING for each unless results are ignored.

        ``messages`` may be a generator: each message is encoded as it comes and, unless
        the publish signals have receivers, not kept (a group of thousands builds them so).
        """
        keep = bool(signals.before_task_publish.receivers or signals.after_task_publish.receivers)
        batch = self.encode_batch(messages, keep_messages=keep)
        self.send(batch, retry=retry, retry_policy=retry_policy)

    def encode_batch(self, messages: Iterable[Message], keep_messages: bool = True) -> Batch:
        """The messages encoded, with their PENDING records (``EncodeError`` here).

        Messages alike but for id and arguments (a group's members, a loop of ``delay()``
        calls batched) are encoded from a template of their shape: the same bytes, made
        at a fraction of the cost; the first message is encoded alone (most batches hold
        one)."""
        batch = Batch(keep_messages=keep_messages)
        shapes: Optional[dict[tuple[Any, ...], Any]] = None
        for message in messages:
            if shapes is None:
                shapes = {}
                body = self.encode(message)
            else:
                body = self._encode_alike(message, shapes)
            batch.add(message, body)
            if not message.ignore_result:
                batch.records[message.id] = self.pending_record(message)
        return batch

    def _encode_alike(self, message: Message, shapes: dict[tuple[Any, ...], Any]) -> bytes:
        """``encode(message)``, through the template of its shape once the shape was seen
        before in ``shapes`` (shape -> None when seen once, else (template or None, the
        chord dict whose id the shape names, kept so that no other takes its id))."""
        if message.headers or message.link or message.link_error or message.chain:
            return self.encode(message)  # per-message values: no template
        chord = message.chord
        shape = (
            message.task,
            message.queue,
            message.priority,
            message.retries,
            message.eta,
            message.expires,
            message.parent_id,
            message.root_id,
            message.group_id,
            message.ignore_result,
            None if chord is None else id(chord),  # a group's members share one chord dict
            message.serializer,
            message.compression,
        )
        known = shapes.get(shape, _UNSEEN)
        if known is _UNSEEN:
            shapes[shape] = None
            return self.encode(message)
        if known is None:
            splice = self.codec.splicer(
                message.to_dict(), _HOLES, message.serializer, message.compression
            )
            known = shapes[shape] = (splice, chord)
        splice = known[0]
        if splice is None:
            return self.encode(message)
        return cast(bytes, splice(message.id, message.args, message.kwargs))

    def send(
        self,
        batch: Batch,
        *,
        retry: bool = True,
        retry_policy: Optional[Mapping[str, Any]] = None,
        write: Optional[Write] = None,
    ) -> None:
        """Publish an encoded batch in one step, with the publish signals; through
        ``write(envelopes, records, ttl)`` instead of the broker when given (no retries:
        it writes into a caller's transaction)."""
        if signals.before_task_publish.receivers:
            for message in batch.messages:
                signals.before_task_publish.send(
                    message.task,
                    body=message.to_dict(),
                    exchange="",
                    routing_key=message.queue,
                    headers=message.headers,
                    properties={"eta": message.eta, "priority": message.priority},
                    declare=[],
                    retry_policy=retry_policy,
                )
        if write is None:
            self.publish_envelopes(
                batch.envelopes, batch.records, retry=retry, retry_policy=retry_policy
            )
        else:
            write(batch.envelopes, batch.records, self.config.result_expires)
        if signals.after_task_publish.receivers:
            for message in batch.messages:
                signals.after_task_publish.send(
                    message.task,
                    body=message.to_dict(),
                    exchange="",
                    routing_key=message.queue,
                    headers=message.headers,
                )

    def publish_envelopes(
        self,
        envelopes: Sequence[Envelope],
        records: Mapping[str, bytes],
        *,
        retry: bool = True,
        retry_policy: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Publish encoded messages with their records (one atomic step when the store is
        the broker's own; records first otherwise, so no worker finds a task without
        one), retrying by the policy while the broker is unreachable, for at most
        ``TASKS_PUBLISH_TIMEOUT`` seconds in all."""
        policy = {**DEFAULT_RETRY_POLICY, **(retry_policy or {})}
        ttl = self.config.result_expires
        budget = self.config.publish_timeout
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                broker = self.connections.joint
                if broker is not None:
                    broker.publish_with_records(envelopes, records, ttl)
                else:
                    if records:  # a new message: its id is no longer fenced (Store.fence)
                        store = self.connections.store
                        store.set_results_fenced({k: (v, "") for k, v in records.items()}, ttl)
                    self.connections.transport.publish(envelopes)
                return
            except OperationalError as error:
                # The failed attempt may have stored them after all: no id is fresh now.
                envelopes = [replace(envelope, fresh=False) for envelope in envelopes]
                limit = policy["max_retries"]
                pause = min(
                    policy["interval_start"] + attempt * policy["interval_step"],
                    policy["interval_max"],
                )
                elapsed = time.monotonic() - started
                if (
                    not retry
                    or (limit is not None and attempt >= limit)
                    or elapsed + pause >= budget
                ):
                    raise OperationalError(
                        f"Could not publish to {hide_password(self.connections.broker_url)} "
                        f"after {attempt + 1} attempt(s) in {elapsed:.1f}s "
                        f"(TASKS_PUBLISH_TIMEOUT is {budget:g}s): {error}"
                    ) from error
                time.sleep(pause)
                attempt += 1


#: The fields in which messages of one shape differ (see ``Producer.encode_batch``).
_HOLES = ("id", "args", "kwargs")
_UNSEEN = object()


def _first_set(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _signature_dicts(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item.to_dict() if hasattr(item, "to_dict") else dict(item) for item in items]
