"""Continuing workflows after a task: the next chain step, links, chord bodies, errbacks.

Follow-up tasks are sent as children of the task that finished, inside the app context,
so they carry its parent and root ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..canvas import Signature
from ..exceptions import EncodeError, TaskError
from ..message import Message, Request, pop_request, push_request
from ..records import Record

if TYPE_CHECKING:
    from ..runtime import Runtime


class Workflows:
    """Sends what follows a finished task of one app."""

    def __init__(self, runtime: Runtime, owner: Any) -> None:
        self.runtime = runtime
        #: The ``Tasks`` object signatures are bound to.
        self.owner = owner

    def after_success(self, message: Message, request: Request, value: Any) -> list[str]:
        """Send the next chain step, link callbacks and a completed chord's body; returns
        the ids sent (the finished task's children)."""
        if not (message.chain or message.link or message.chord):
            return []
        sent: list[str] = []
        with self._as_parent(request):
            if message.chain:
                step = Signature.from_dict(message.chain[0], self.owner)
                sent.append(step.apply_async((value,), chain=message.chain[1:]).id)
            for link in message.link:
                sent.append(Signature.from_dict(link, self.owner).apply_async((value,)).id)
            if message.chord:
                sent += self._chord_part_done(message, value)
        return sent

    def after_failure(self, message: Message, request: Request) -> None:
        """Call the errbacks with the failed task's id; fail the chord it belongs to."""
        with self._as_parent(request):
            for link in message.link_error:
                Signature.from_dict(link, self.owner).apply_async((message.id,))
            if message.chord:
                body = Signature.from_dict(message.chord["body"], self.owner)
                error = TaskError(f"chord member {message.task}[{message.id}] failed")
                self.runtime.write(body.options["task_id"], Record.failure(error, body.task))

    def _chord_part_done(self, message: Message, value: Any) -> list[str]:
        chord = message.chord or {}
        runtime = self.runtime
        # Store this member's result before counting it: the member whose count completes
        # the chord then finds every other member's result already stored.
        try:
            runtime.write(
                message.id, Record.success(value, message.task, parent_id=message.parent_id)
            )
        except EncodeError:
            return []  # not counted: the task fails, which fails the chord (after_failure)
        ttl = max(runtime.config.result_expires, 3600)
        if runtime.store.incr(f"chord:{chord['group_id']}", ttl) != chord["size"]:
            return []
        values = [
            record.result if record is not None else None
            for record in (
                Record.decode(runtime.codec, raw)
                for raw in runtime.store.get_results(chord["results"])
            )
        ]
        body = Signature.from_dict(chord["body"], self.owner)
        return [body.apply_async((values,)).id]

    @contextmanager
    def _as_parent(self, request: Request) -> Iterator[None]:
        with self.runtime.app.app_context():
            token = push_request(request)
            try:
                yield
            finally:
                pop_request(token)
