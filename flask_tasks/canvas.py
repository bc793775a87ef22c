"""Workflows: ``Signature`` (a task call to make later), ``chain``, ``group``, ``chord``.

A chain travels inside the message of its first task: each task, on success, sends the
next one with its result prepended to the next one's arguments (unless immutable). Ids are
assigned up front so the caller holds the final result at once. A group is published in
one broker call. A chord counts finished header tasks with an atomic broker counter and
sends its body, with the list of header results, when the last one finishes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from .result import AsyncResult, EagerResult, GroupResult
from .runtime import Runtime, current_runtime

if TYPE_CHECKING:
    from .runtime import Owner


def _runtime_for(extension: Owner | None) -> Runtime:
    return extension.runtime() if extension is not None else current_runtime()


def send(runtime: Runtime, name: str, args: Any, kwargs: Any, options: Mapping[str, Any]) -> Any:
    """Send a call by task name: through the task when this app knows it (so its options
    and eager mode apply), else straight through the producer."""
    task = runtime.registry.get(name)
    if task is not None:
        return task.apply_async(args, kwargs, **options)
    producer = runtime.producer
    message = producer.message(name, args, kwargs, options, {})
    producer.publish(
        [message], retry=options.get("retry", True), retry_policy=options.get("retry_policy")
    )
    return AsyncResult(message.id, runtime, name)


class Signature:
    """A task name with arguments and options: ``add.s(2, 2)``, ``signature("app.add")``."""

    def __init__(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        options: Optional[Mapping[str, Any]] = None,
        immutable: bool = False,
        extension: Owner | None = None,
    ) -> None:
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable
        self.extension = extension

    def __repr__(self) -> str:
        arguments = [repr(arg) for arg in self.args]
        arguments += [f"{key}={value!r}" for key, value in self.kwargs.items()]
        return f"{self.task}({', '.join(arguments)}){'!' if self.immutable else ''}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and other.to_dict() == self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that travels inside messages."""
        data: dict[str, Any] = {"task": self.task, "args": list(self.args), "kwargs": self.kwargs}
        if self.options:
            data["options"] = self.options
        if self.immutable:
            data["immutable"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], extension: Owner | None = None) -> Signature:
        return cls(
            data["task"],
            data.get("args") or (),
            data.get("kwargs"),
            data.get("options"),
            bool(data.get("immutable")),
            extension,
        )

    def set(self, **options: Any) -> Signature:
        """Add call options (queue, countdown, priority...); returns the signature."""
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def clone(
        self, args: Sequence[Any] = (), kwargs: Optional[Mapping[str, Any]] = None, **options: Any
    ) -> Signature:
        """A copy with ``args`` prepended (unless immutable) and ``kwargs``/options merged."""
        new_args = self.args if self.immutable else tuple(args) + self.args
        new_kwargs = self.kwargs if self.immutable else {**self.kwargs, **(kwargs or {})}
        return Signature(
            self.task,
            new_args,
            new_kwargs,
            {**self.options, **options},
            self.immutable,
            self.extension,
        )

    def link(self, callback: Signature) -> Signature:
        """Call ``callback`` with this task's result when it succeeds."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Call ``errback`` with this task's id when it fails."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    on_error = link_error

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> Any:
        """Send the task with these extra arguments and options."""
        call = self.clone(args, kwargs, **options)
        return send(_runtime_for(self.extension), call.task, call.args, call.kwargs, call.options)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(
        self, args: Sequence[Any] = (), kwargs: Optional[Mapping[str, Any]] = None, **options: Any
    ) -> EagerResult:
        call = self.clone(args, kwargs)
        task = _runtime_for(self.extension).get_task(call.task)
        result: EagerResult = task.apply(call.args, call.kwargs, **options)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task function inline with these arguments merged."""
        call = self.clone(args, kwargs)
        task = _runtime_for(self.extension).get_task(call.task)
        return task(*call.args, **call.kwargs)

    def __or__(self, other: Any) -> chain:
        if isinstance(other, chain):
            return chain(self, *other.tasks)
        if isinstance(other, Signature):
            return chain(self, other)
        return NotImplemented

    s = clone


def signature(
    task: Union[str, Signature, Mapping[str, Any]], *args: Any, **kwargs: Any
) -> Signature:
    """A signature from a task name, a signature, or a dict made by ``to_dict``."""
    if isinstance(task, Signature):
        return task
    if isinstance(task, Mapping):
        return Signature.from_dict(task)
    return Signature(task, *args, **kwargs)


class chain(Signature):
    """Run signatures one after another, each getting the previous result first."""

    def __init__(self, *tasks: Signature) -> None:
        if len(tasks) == 1 and isinstance(tasks[0], (list, tuple)):
            tasks = tuple(tasks[0])
        if not tasks:
            raise ValueError("chain() needs at least one signature")
        self.tasks = tuple(tasks)
        first = tasks[0]
        super().__init__(first.task, extension=first.extension)

    def __repr__(self) -> str:
        return " | ".join(repr(task) for task in self.tasks)

    def __or__(self, other: Any) -> chain:
        if isinstance(other, chain):
            return chain(*self.tasks, *other.tasks)
        if isinstance(other, Signature):
            return chain(*self.tasks, other)
        return NotImplemented

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> Any:
        """Send the first task carrying the rest; returns the last task's result, whose
        ``parent`` leads back through the chain."""
        steps = [task.clone() for task in self.tasks]
        for step in steps:
            step.options.setdefault("task_id", str(uuid.uuid4()))
        first, rest = steps[0], steps[1:]
        first.options["chain"] = [step.to_dict() for step in rest]
        runtime = _runtime_for(first.extension)
        if runtime.config.always_eager:
            result: Any = first.apply_async(args, kwargs, **options)
            for step in rest:
                result = step.apply_async((result.get(),))
            return result
        first.apply_async(args, kwargs, **options)
        return AsyncResult(steps[-1].options["task_id"], runtime, steps[-1].task)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)


class group(Signature):
    """Run signatures in parallel; the ``GroupResult`` gives their results in order."""

    def __init__(self, *tasks: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            tasks = tuple(tasks[0])
        self.tasks = tuple(tasks)
        super().__init__("group", extension=self.tasks[0].extension if self.tasks else None)

    def __repr__(self) -> str:
        return f"group({', '.join(repr(task) for task in self.tasks)})"

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> GroupResult:
        """Publish every task in one broker call (the bulk path)."""
        runtime = _runtime_for(self.extension)
        group_id = options.pop("group_id", None) or str(uuid.uuid4())
        chord_info = options.pop("chord", None)
        calls = [task.clone(args, kwargs, **options) for task in self.tasks]
        if runtime.config.always_eager:
            return GroupResult(group_id, [call.apply_async() for call in calls])
        producer = runtime.producer
        messages = []
        for call in calls:
            call_options = {**call.options, "group_id": group_id}
            if chord_info is not None:
                call_options["chord"] = chord_info
            messages.append(
                producer.message(
                    call.task, call.args, call.kwargs, call_options, runtime.options_for(call.task)
                )
            )
        if chord_info is not None:
            chord_info["results"] = [message.id for message in messages]
        producer.publish(
            messages, retry=options.get("retry", True), retry_policy=options.get("retry_policy")
        )
        return GroupResult(group_id, [AsyncResult(m.id, runtime, m.task) for m in messages])

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)


class chord(Signature):
    """Run a group (the header), then ``body`` with the list of its results."""

    def __init__(self, header: Any, body: Signature | None = None) -> None:
        self.header = header if isinstance(header, group) else group(header)
        self.body = body
        super().__init__("chord", extension=self.header.extension)

    def __call__(self, body: Signature | None = None, **options: Any) -> Any:
        if body is not None:
            self.body = body
        return self.apply_async(**options)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> Any:
        """Send the header; returns the body's result (its id is assigned now)."""
        if self.body is None:
            raise ValueError("chord needs a body: chord(header)(body)")
        runtime = _runtime_for(self.extension)
        body = self.body.clone()
        body.options.setdefault("task_id", str(uuid.uuid4()))
        if runtime.config.always_eager:
            values = self.header.apply_async(args, kwargs, **options).get()
            return body.apply_async((values,))
        group_id = str(uuid.uuid4())
        info = {"group_id": group_id, "size": len(self.header.tasks), "body": body.to_dict()}
        self.header.apply_async(args, kwargs, group_id=group_id, chord=info, **options)
        return AsyncResult(body.options["task_id"], runtime, body.task)
