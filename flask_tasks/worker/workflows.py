"""Continuing workflows after a task: the next chain step, links, chord bodies, errbacks.

Follow-up tasks are sent as children of the task that finished, inside the app context,
so they carry its parent and root ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import states
from ..canvas import Signature
from ..exceptions import EncodeError, TaskError
from ..groups import from_dict
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
                step = from_dict(message.chain[0], self.owner)
                sent += step.send_frozen(self.runtime, (value,), message.chain[1:])
            for link in message.link:
                sent.append(Signature.from_dict(link, self.owner).apply_async((value,)).id)
            if message.chord:
                sent += self._chord_part_done(message, value)
        return sent

    def after_failure(self, message: Message, request: Request) -> None:
        """Call the errbacks with the failed task's id; fail what can no longer run: the
        rest of its chain, and the body of the chord it belongs to (their callers' ``get()``
        raises instead of waiting)."""
        with self._as_parent(request):
            for link in message.link_error:
                Signature.from_dict(link, self.owner).apply_async((message.id,))
        cause = f"{message.task}[{message.id}] failed"
        chords = [message.chord] if message.chord else []
        for step in message.chain:
            rest = from_dict(step)
            self._fail(rest, TaskError(f"an earlier chain step {cause}"))
            chords += _chords_in(rest)  # a chord member whose chain stopped early
        for chord in chords:
            self._fail(from_dict(chord["body"]), TaskError(f"chord member {cause}"))

    def _fail(self, workflow: Signature, error: TaskError) -> None:
        for task_id in workflow.final_ids():
            self.runtime.write(task_id, Record.failure(error, None))

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
        # A member delivered twice counts twice, so the count only says when to look: the
        # body is sent once every member's result is stored, by whoever claims it first.
        if runtime.store.incr(f"chord:{chord['group_id']}", ttl) < chord["size"]:
            return []
        records = [
            Record.decode(runtime.codec, raw) for raw in runtime.store.get_results(chord["results"])
        ]
        if not all(record is not None and record.state == states.SUCCESS for record in records):
            return []
        if not runtime.store.claim(f"chord:{chord['group_id']}:body", ttl):
            return []
        values = [record.result for record in records if record is not None]
        body = from_dict(chord["body"], self.owner)
        return body.send_frozen(runtime, (values,), [])

    @contextmanager
    def _as_parent(self, request: Request) -> Iterator[None]:
        with self.runtime.app.app_context():
            token = push_request(request)
            try:
                yield
            finally:
                pop_request(token)


def _chords_in(workflow: Signature) -> list[dict[str, Any]]:
    """The chords that ``workflow`` (never to run now) would have completed a member of."""
    found = [workflow.options["chord"]] if "chord" in workflow.options else []
    for part in getattr(workflow, "tasks", ()):
        found += _chords_in(part)
    header = getattr(workflow, "header", None)
    if header is not None:
        found += _chords_in(header)
    return found
