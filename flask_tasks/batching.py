"""Batching: hold the messages sent in one app context and publish them together.

Inside ``with tasks.batch():``, or anywhere in a request when ``TASKS_BATCH_PER_REQUEST``
is on, ``delay()``, ``apply_async()`` and ``send_task()`` build and encode their message
at the call (its id is fixed, ``EncodeError`` is raised there) but publish nothing. At
the end of the block (of the request: before its response is sent) everything held is
published in one step per retry policy: one round trip on Redis for any number of tasks.

* A result whose message is still held publishes the batch first when it is read
  (``get()``, ``state``, ``ready()``...), so waiting on it cannot hang.
* A block that raises still publishes what it holds (each ``delay()`` was made); the
  block's exception then goes on.
* A publish that fails at the end raises ``OperationalError`` naming every task not
  sent, at the end of the block (with the block's own exception, if any, as its
  context), from ``get()``, or in the request (a 500 instead of a lost task).
* Nested blocks join the outermost one. Eager mode, ``on_commit=True`` and
  ``connection=`` keep their own timing; groups and chains are one publish already.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Optional

from flask import Flask, Response, g, has_app_context, has_request_context

from .message import Message
from .on_commit import Held, flush
from .on_commit import send_messages as send_now

if TYPE_CHECKING:
    from .runtime import Runtime

#: Where an app context keeps its batches (``flask.g``), by runtime.
G_KEY = "_flask_tasks_batches"

#: Called before a held task's result is read: publishes its batch.
SendHeld = Callable[[], None]

#: ``batch()`` blocks open now, in any thread: while none is, and no app batches its
#: requests, a plain ``delay()`` need not look in ``flask.g`` at all.
_open_blocks = 0
_open_lock = threading.Lock()


class Batch:
    """The messages one app context holds for one app, until :meth:`flush`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.held: list[Held] = []
        #: Open ``batch()`` blocks; 0 for a request's own batch.
        self.depth = 0

    def hold(
        self, messages: Sequence[Message], retry: bool, retry_policy: Optional[Mapping[str, Any]]
    ) -> None:
        """Encode ``messages`` now (``EncodeError`` here) and keep them for the flush."""
        batch = self.runtime.producer.encode_batch(messages)
        self.held.append(Held(self.runtime, batch, retry=retry, retry_policy=retry_policy))

    def flush(self) -> None:
        """Publish what is held (one publish per retry policy); nothing is held after,
        sent or not: a failure raises ``OperationalError`` naming what was not sent."""
        held, self.held = self.held, []
        if held:
            flush(held, ended="The batch ended")


def _batches() -> dict[int, Batch]:
    found: dict[int, Batch] = g.setdefault(G_KEY, {})
    return found


def current_batch(runtime: Runtime) -> Optional[Batch]:
    """The batch holding ``runtime``'s messages now: an open ``batch()`` block's, else
    (``TASKS_BATCH_PER_REQUEST``) the request's, made on first use; else None."""
    if not _open_blocks and not runtime.config.batch_per_request:
        return None
    if not has_app_context():
        return None
    batches = g.get(G_KEY)  # a plain delay() adds nothing to g
    found = batches.get(id(runtime)) if batches else None
    if found is None and runtime.config.batch_per_request and has_request_context():
        found = _batches()[id(runtime)] = Batch(runtime)
    return found


def send_messages(
    runtime: Runtime,
    messages: Sequence[Message],
    *,
    retry: bool = True,
    retry_policy: Optional[Mapping[str, Any]] = None,
    on_commit: bool = False,
    session: Any = None,
    connection: Any = None,
) -> Optional[SendHeld]:
    """Hold ``messages`` in the current batch, if any (returns what publishes it), else
    send them as :func:`.on_commit.send_messages` does (returns None)."""
    if not on_commit and connection is None:
        found = current_batch(runtime)
        if found is not None:
            found.hold(messages, retry, retry_policy)
            return found.flush
    send_now(
        runtime,
        messages,
        retry=retry,
        retry_policy=retry_policy,
        on_commit=on_commit,
        session=session,
        connection=connection,
    )
    return None


@contextmanager
def batching(runtime: Runtime) -> Iterator[Batch]:
    """Hold the messages ``runtime``'s app sends inside the block; publish them at its
    end (see the module docstring). Needs an app context of that app (the one that
    ``Tasks.batch`` found ``runtime`` in)."""
    global _open_blocks
    batches = _batches()
    found = batches.get(id(runtime))
    if found is None:
        found = batches[id(runtime)] = Batch(runtime)
    found.depth += 1
    with _open_lock:
        _open_blocks += 1
    try:
        yield found
    finally:
        with _open_lock:
            _open_blocks -= 1
        found.depth -= 1
        if found.depth == 0:
            if not runtime.config.batch_per_request or not has_request_context():
                del batches[id(runtime)]
            found.flush()


def register_request_batching(app: Flask, runtime: Runtime) -> None:
    """``TASKS_BATCH_PER_REQUEST``: publish a request's batch when its view has
    returned (before the response is sent), and at its teardown whatever is left."""

    def publish_before_response(response: Response) -> Response:
        found = _batches().get(id(runtime))
        if found is not None:
            found.flush()
        return response

    def publish_at_teardown(_error: Optional[BaseException]) -> None:
        found = g.pop(G_KEY, {}).get(id(runtime))
        if found is not None:
            found.flush()

    app.after_request(publish_before_response)
    app.teardown_request(publish_at_teardown)
