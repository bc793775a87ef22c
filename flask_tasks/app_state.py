"""What Flask-Tasks keeps per app (``app.extensions["tasks"]``): validated settings, the
codec, the broker connection; and what it does with them: send tasks, write and read
result records, revoke.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Optional, Union

from flask import Flask

from . import signals, states
from .brokers import Broker, Envelope, create_broker
from .config import TasksConfig
from .exceptions import ImproperlyConfigured, OperationalError
from .message import Codec, Message
from .result import AsyncResult, utcnow_iso
from .task import Task, current_request, task_options_for, to_timestamp

if TYPE_CHECKING:
    from .extension import Tasks

#: Publishing retry policy when the broker is unreachable (as in Celery).
DEFAULT_RETRY_POLICY = {
    "max_retries": 3,
    "interval_start": 0.0,
    "interval_step": 0.2,
    "interval_max": 1.0,
}


class TasksState:
    """What Flask-Tasks keeps per app: settings, codec, and the broker connection."""

    def __init__(self, extension: Tasks, app: Flask, config: TasksConfig) -> None:
        self.extension = extension
        self.app = app
        self.config = config
        self.codec = _make_codec(app, config)
        self.broker_url = config.broker_url_for(app.instance_path)
        self._broker: Broker | None = None
        self._backend: Broker | None = None
        self._pid = os.getpid()
        self._routes: dict[str, tuple[Optional[str], Optional[int]]] = {}
        self._options: dict[str, dict[str, Any]] = {}
        self._pending_records: dict[str, bytes] = {}

    # -- connections (opened lazily, once per process) --------------------------------------

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # never share sockets or files with a parent process
            self._pid = os.getpid()
            self._broker = self._backend = None

    @property
    def broker(self) -> Broker:
        self._check_fork()
        if self._broker is None:
            self._broker = create_broker(
                self.broker_url, key_prefix=self.config.key_prefix, **self.config.broker_options
            )
        return self._broker

    @property
    def backend(self) -> Broker:
        """Where results live: the broker unless ``TASKS_RESULT_BACKEND`` names another."""
        backend_url = self.config.result_backend
        if not backend_url or backend_url == self.broker_url:
            return self.broker
        self._check_fork()
        if self._backend is None:
            self._backend = create_broker(backend_url, key_prefix=self.config.key_prefix)
        return self._backend

    @property
    def shares_backend(self) -> bool:
        return self.backend is self.broker

    def close(self) -> None:
        for store in {id(s): s for s in (self._broker, self._backend) if s}.values():
            store.close()
        self._broker = self._backend = None

    # -- tasks and options ----------------------------------------------------------------

    def tasks(self) -> Iterator[Task[Any, Any]]:
        return iter(self.extension._registry.values())

    def task_options(self, task: Task[Any, Any]) -> dict[str, Any]:
        options = self._options.get(task.name)
        if options is None:
            options = self._options[task.name] = task_options_for(task, self.config.annotations)
        return options

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

    # -- sending --------------------------------------------------------------------------

    def send(
        self,
        name: str,
        args: Optional[Sequence[Any]],
        kwargs: Optional[Mapping[str, Any]],
        options: Mapping[str, Any],
        task: Task[Any, Any] | None = None,
    ) -> Any:
        """Publish one task invocation (or run it eagerly); returns its result handle."""
        if self.config.always_eager and task is not None:
            from .execution import apply_eagerly

            return apply_eagerly(
                self,
                task,
                tuple(args or ()),
                dict(kwargs or {}),
                task_id=options.get("task_id") or str(uuid.uuid4()),
                throw=self.config.eager_propagates,
                options=dict(options),
            )
        message = self.build_message(name, args, kwargs, options, task)
        self.publish_messages([message], options, task)
        return AsyncResult(message.id, self, name)

    def build_message(
        self,
        name: str,
        args: Optional[Sequence[Any]],
        kwargs: Optional[Mapping[str, Any]],
        options: Mapping[str, Any],
        task: Task[Any, Any] | None = None,
    ) -> Message:
        task_options = self.task_options(task) if task is not None else {}
        route_queue, route_priority = self.route(name)
        queue = options.get("queue") or route_queue or task_options.get("queue")
        priority = _first_set(
            options.get("priority"), route_priority, task_options.get("priority"), 5
        )
        if not isinstance(priority, int) or not 0 <= priority <= 9:
            raise ValueError(
                f"priority of {name} must be an int from 0 (highest) to 9, got {priority!r}"
            )
        expires = _first_set(options.get("expires"), task_options.get("expires"))
        ignore_result = _first_set(options.get("ignore_result"), task_options.get("ignore_result"))
        parent = current_request()
        parent_id = parent.id if parent is not None and not parent.called_directly else None
        return Message(
            id=options.get("task_id") or str(uuid.uuid4()),
            task=name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            queue=queue or self.config.default_queue,
            priority=priority,
            eta=to_timestamp(options.get("eta"), options.get("countdown")),
            expires=to_timestamp(expires) if expires is not None else None,
            headers=dict(options.get("headers") or {}),
            parent_id=parent_id,
            root_id=(parent.root_id or parent_id) if parent_id and parent else None,
            group_id=options.get("group_id"),
            ignore_result=bool(ignore_result),
            link=_signature_dicts(options.get("link")),
            link_error=_signature_dicts(options.get("link_error")),
            chain=list(options.get("chain") or ()),
            chord=options.get("chord"),
            serializer=options.get("serializer") or task_options.get("serializer"),
            compression=options.get("compression") or task_options.get("compression"),
        )

    def encode_message(self, message: Message) -> bytes:
        return self.codec.encode(message.to_dict(), message.serializer, message.compression)

    def publish_messages(
        self,
        messages: Sequence[Message],
        options: Mapping[str, Any],
        task: Task[Any, Any] | None = None,
    ) -> None:
        """Encode (raising EncodeError before anything is sent) and publish in one step,
        recording PENDING for each unless results are ignored."""
        del task
        envelopes = []
        records: dict[str, bytes] = {}
        for message in messages:
            body = self.encode_message(message)
            if signals.before_task_publish.receivers:
                signals.before_task_publish.send(
                    message.task,
                    body=message.to_dict(),
                    exchange="",
                    routing_key=message.queue,
                    headers=message.headers,
                    properties={"eta": message.eta, "priority": message.priority},
                    declare=[],
                    retry_policy=options.get("retry_policy"),
                )
            envelopes.append(
                Envelope(message.id, message.queue, body, message.priority, message.eta)
            )
            if not message.ignore_result:
                records[message.id] = self._pending_record(message)
        self.publish_envelopes(
            envelopes, records, options.get("retry", True), options.get("retry_policy")
        )
        if signals.after_task_publish.receivers:
            for message in messages:
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
        retry: bool = True,
        retry_policy: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish encoded messages with their result records, retrying by the policy
        while the broker is unreachable."""
        policy = {**DEFAULT_RETRY_POLICY, **(retry_policy or {})}
        attempt = 0
        ttl = self.config.result_expires
        while True:
            try:
                if records and not self.shares_backend:
                    for task_id, record in records.items():
                        self.backend.set_result(task_id, record, ttl)
                    self.broker.publish(envelopes)
                else:
                    self.broker.publish(envelopes, records, ttl)
                return
            except OperationalError as error:
                limit = policy["max_retries"]
                if not retry or (limit is not None and attempt >= limit):
                    raise OperationalError(
                        f"Could not publish to {_url_of(self)} after {attempt + 1} "
                        f"attempt(s): {error}"
                    ) from error
                time.sleep(
                    min(
                        policy["interval_start"] + attempt * policy["interval_step"],
                        policy["interval_max"],
                    )
                )
                attempt += 1

    # -- result records -------------------------------------------------------------------

    def _pending_record(self, message: Message) -> bytes:
        """The PENDING record of a message; the same bytes for every top-level call of a
        task, so they are encoded once."""
        if message.parent_id is not None:
            return self.make_record(states.PENDING, task=message.task, parent_id=message.parent_id)
        record = self._pending_records.get(message.task)
        if record is None:
            record = self.make_record(states.PENDING, task=message.task, parent_id=None)
            self._pending_records[message.task] = record
        return record

    def make_record(
        self,
        status: str,
        result: Any = None,
        traceback: str | None = None,
        **extra: Any,
    ) -> bytes:
        record = {
            "status": status,
            "result": result,
            "traceback": traceback,
            "date_done": utcnow_iso() if status in states.READY_STATES else None,
            **extra,
        }
        return self.codec.encode(record)

    def decode_record(self, raw: bytes | None) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            record = self.codec.decode(raw)
        except Exception as error:
            return {
                "status": states.FAILURE,
                "result": {
                    "exc_type": type(error).__name__,
                    "exc_module": "flask_tasks.exceptions",
                    "exc_message": f"stored result cannot be read: {error}",
                },
                "traceback": None,
                "date_done": None,
            }
        return record if isinstance(record, dict) else None

    def store_state(self, task_id: str, state: str, meta: Any, task_name: str | None) -> None:
        request = current_request()
        if request is not None and request.is_eager:
            return  # eager runs keep their outcome in the EagerResult, not the store
        record = self.make_record(state, meta, task=task_name)
        self.backend.set_result(task_id, record, self.config.result_expires)

    def revoke(self, task_ids: Sequence[str], terminate: bool = False) -> None:
        """Mark tasks revoked; those not started yet are recorded as REVOKED at once."""
        ttl = max(self.config.result_expires, self.config.visibility_timeout)
        marks = list(task_ids) + ([f"terminate:{tid}" for tid in task_ids] if terminate else [])
        self.broker.revoke(marks, ttl)
        for task_id, raw in zip(task_ids, self.backend.get_results(list(task_ids))):
            meta = self.decode_record(raw)
            if meta is not None and meta.get("status") in (states.PENDING, states.RECEIVED):
                self.backend.set_result(
                    task_id,
                    self.make_record(
                        states.REVOKED,
                        {
                            "exc_type": "TaskRevokedError",
                            "exc_module": "flask_tasks.exceptions",
                            "exc_message": "revoked before it started",
                        },
                        task=meta.get("task"),
                    ),
                    self.config.result_expires,
                )


def _make_codec(app: Flask, config: TasksConfig) -> Codec:
    secret = app.config.get("SECRET_KEY")
    sign = config.sign_messages if config.sign_messages is not None else bool(secret)
    if sign and not secret:
        raise ImproperlyConfigured("TASKS_SIGN_MESSAGES is True but the app has no SECRET_KEY")
    keys = [*(app.config.get("SECRET_KEY_FALLBACKS") or []), secret] if sign else []
    return Codec(
        serializer=config.serializer,
        accept=config.accept_content,
        compression=config.compression,
        secret_keys=keys,
        max_bytes=config.message_max_bytes,
    )


def _first_set(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _signature_dicts(value: Union[Any, Sequence[Any], None]) -> list[dict[str, Any]]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item.to_dict() if hasattr(item, "to_dict") else dict(item) for item in items]


def _url_of(state: TasksState) -> str:
    from .brokers import hide_password

    return hide_password(state.broker_url)
