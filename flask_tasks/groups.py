"""Workflows, part two: ``group`` and ``chord``, and reading any workflow from its dict.

See :mod:`flask_tasks.canvas` for how workflows nest and travel.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from .canvas import (
    Result,
    Signature,
    Workflow,
    chain,
    collector_paused,
    entry_of,
    signatures,
)
from .message import Message
from .result import GroupResult

if TYPE_CHECKING:
    from .result import _ResultBase
    from .runtime import Owner, Runtime


def from_dict(data: Mapping[str, Any], extension: Owner | None = None) -> Signature:
    """The signature, chain, group or chord that ``to_dict`` made."""
    kind = data.get("kind")
    if kind == "chain":
        return chain(*(from_dict(step, extension) for step in data["tasks"]))
    if kind == "group":
        made = group(*(from_dict(member, extension) for member in data["tasks"]))
        made.options = dict(data.get("options") or {})
        return made
    if kind == "chord":
        return chord(from_dict(data["header"], extension), from_dict(data["body"], extension))
    return Signature.from_dict(data, extension)


def signature(
    task: Union[str, Signature, Mapping[str, Any]], *args: Any, **kwargs: Any
) -> Signature:
    """A signature from a task name, a signature, or a dict made by ``to_dict``."""
    if isinstance(task, Signature):
        return task
    if isinstance(task, Mapping):
        return from_dict(task)
    return Signature(task, *args, **kwargs)


#: The options of group members whose messages differ only in id and arguments.
_ALIKE_OPTIONS = frozenset({"task_id", "group_id", "chord"})


class group(Workflow):
    """Run signatures in parallel; the ``GroupResult`` gives their results in order."""

    def __init__(self, *tasks: Any) -> None:
        members: list[Signature] = []
        with collector_paused():  # ``tasks`` may be a generator of thousands
            if len(tasks) == 1 and not isinstance(tasks[0], Signature):
                tasks = tuple(tasks[0])
            for member in signatures(tasks, "group()"):
                members.extend(member.tasks if isinstance(member, group) else [member])
        self.tasks: tuple[Signature, ...] = tuple(members)
        super().__init__("group", extension=entry_of(members))

    def __repr__(self) -> str:
        return f"group({', '.join(repr(task) for task in self.tasks)})"

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, Signature):
            return chord(self, other)
        return NotImplemented

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": "group", "tasks": [m.to_dict() for m in self.tasks]}
        if self.options:
            data["options"] = self.options
        return data

    def copy(self) -> group:
        made = group(*(member.copy() for member in self.tasks))
        made.options = dict(self.options)
        return made

    def freeze(self) -> None:
        self.options.setdefault("group_id", str(uuid.uuid4()))
        for member in self.tasks:
            for name, value in self.options.items():  # call options apply to every member
                if name not in ("group_id", "task_id"):
                    member.options.setdefault(name, value)
            member.options["group_id"] = self.options["group_id"]
            member.freeze()

    def final_ids(self) -> list[str]:
        return [task_id for member in self.tasks for task_id in member.final_ids()]

    def handle(self, runtime: Runtime) -> GroupResult:
        members: list[_ResultBase] = [member.handle(runtime) for member in self.tasks]
        return GroupResult(self.options["group_id"], members)

    def attach(self, chord_info: dict[str, Any]) -> None:
        for member in self.tasks:
            member.attach(chord_info)

    def send_frozen(
        self, runtime: Runtime, args: Sequence[Any], rest: Sequence[dict[str, Any]]
    ) -> list[str]:
        if rest:  # a group followed by more steps waits for all its members: a chord
            return chord(self, chain(*(from_dict(s) for s in rest))).send_frozen(runtime, args, [])
        plain = [m for m in self.tasks if not isinstance(m, Workflow)]
        sent = self._publish_together(runtime, args, plain)
        for member in self.tasks:
            if isinstance(member, Workflow):
                sent += member.send_frozen(runtime, args, [])
        return sent

    @staticmethod
    def _publish_together(
        runtime: Runtime, args: Sequence[Any], members: Sequence[Signature]
    ) -> list[str]:
        """The plain members in one publish (one round trip for the whole group); each
        message is built as it is encoded, and not kept after."""
        producer = runtime.producer
        ids: list[str] = []

        def messages() -> Iterator[Message]:
            # The last member sent with no options but its ids and chord (the common
            # case): its message, and options, for the members like it.
            template: Message | None = None
            shared: dict[str, Any] = {}
            for member in members:
                # Nothing to prepend: the member itself (message() copies what it takes).
                call = member.clone(args) if args else member
                options = call.options
                if (
                    template is not None
                    and call.task == template.task
                    and options.keys() == shared.keys()
                    and options.get("group_id") == shared.get("group_id")
                    and options.get("chord") is shared.get("chord")
                ):
                    message = producer.alike(template, options["task_id"], call.args, call.kwargs)
                else:
                    task_options = runtime.options_for(call.task)
                    message = producer.message(
                        call.task, call.args, call.kwargs, options, task_options
                    )
                    if options.keys() <= _ALIKE_OPTIONS and not message.headers:
                        template, shared = message, options
                message.fresh_id = member.fresh  # its id made by freeze() just now
                ids.append(message.id)
                yield message

        if members:
            producer.publish(messages())
        return ids

    def run_eagerly(self, runtime: Runtime, args: Sequence[Any]) -> GroupResult:
        results: list[_ResultBase] = [m.run_eagerly(runtime, args) for m in self.tasks]
        return GroupResult(self.options["group_id"], results)


class chord(Workflow):
    """Run a group (the header), then ``body`` with the list of its results."""

    def __init__(self, header: Any, body: Signature | None = None) -> None:
        self.header = header if isinstance(header, group) else group(header)
        self.body = body
        super().__init__("chord", extension=self.header.extension)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def __call__(self, body: Signature | None = None, **options: Any) -> Any:
        if body is not None:
            self.body = body
        return self.apply_async(**options)

    def _body(self) -> Signature:
        if self.body is None:
            raise ValueError("chord needs a body: chord(header)(body)")
        return self.body

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "chord", "header": self.header.to_dict(), "body": self._body().to_dict()}

    def copy(self) -> chord:
        made = chord(self.header.copy(), self._body().copy())
        made.options = dict(self.options)
        return made

    def freeze(self) -> None:
        self.header.options.update(self.options)
        self.options = {}
        self.header.freeze()
        self._body().freeze()

    def final_ids(self) -> list[str]:
        return self._body().final_ids()

    def handle(self, runtime: Runtime) -> Result:
        return self._body().handle(runtime)

    def attach(self, chord_info: dict[str, Any]) -> None:
        self._body().attach(chord_info)

    def send_frozen(
        self, runtime: Runtime, args: Sequence[Any], rest: Sequence[dict[str, Any]]
    ) -> list[str]:
        body = self._body()
        if rest:
            body = chain(body, *(from_dict(step) for step in rest))
        members = self.header.final_ids()
        if not members:  # nothing to wait for: the body runs at once, with no results
            return body.send_frozen(runtime, ([],), [])
        header = self.header.copy()
        for made, member in zip(header.tasks, self.header.tasks):
            made.fresh = member.fresh  # the copy is sent instead of it, with its ids
        header.attach(
            {
                "group_id": self.header.options["group_id"],
                "size": len(members),
                "body": body.to_dict(),
                "results": members,
            }
        )
        return header.send_frozen(runtime, args, [])

    def run_eagerly(self, runtime: Runtime, args: Sequence[Any]) -> Result:
        values = self.header.run_eagerly(runtime, args).get()
        return self._body().run_eagerly(runtime, (values,))
