"""Workflows, part one: ``Signature`` (a task call to make later) and ``chain``.

``group`` and ``chord`` build on these in :mod:`flask_tasks.groups`.

They nest as in Celery: ``group(...) | sig`` is a chord, a chain may hold groups and chords
at any position, a group may hold chains and chords, a chord's header may hold chains and
groups (groups inside groups or headers are flattened).

Every id is assigned when a workflow is sent (``freeze``), so the caller holds the final
result at once. What is still to run travels inside the messages as dicts: a task carries
the rest of its chain; every task whose end completes a chord member carries the chord
(``{"group_id", "size", "body", "results"}``). A chord counts finished members in the
store, checks that every member's result is stored, and claims the right to send the
body, so the body runs once even when a member is delivered twice.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Optional, Union

from .batching import send_messages
from .message import new_id
from .on_commit import call_on_commit, check_options
from .result import AsyncResult, EagerResult, GroupResult
from .runtime import Runtime, current_runtime

if TYPE_CHECKING:
    from .runtime import Owner

Result = Union[AsyncResult, EagerResult, GroupResult]


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off (unless already off) while a workflow is copied,
    sent and handed back: a group of 10,000 makes enough short-lived containers, none
    in a cycle, to set it off a hundred times (a sixth of its Python time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _runtime_for(extension: Owner | None) -> Runtime:
    return extension.runtime() if extension is not None else current_runtime()


def send(runtime: Runtime, name: str, args: Any, kwargs: Any, options: Mapping[str, Any]) -> Any:
    """Send a call by task name: through the task when this app knows it (so its options
    and eager mode apply), else straight through the producer."""
    task = runtime.registry.get(name)
    if task is not None:
        return task.apply_async(args, kwargs, **options)
    message = runtime.producer.message(name, args, kwargs, options, {})
    unsent = send_messages(
        runtime,
        [message],
        retry=options.get("retry", True),
        retry_policy=options.get("retry_policy"),
        on_commit=options.get("on_commit", False),
        session=options.get("session"),
        connection=options.get("connection"),
    )
    return AsyncResult(message.id, runtime, name, unsent=unsent)


class Signature:
    """A task name with arguments and options: ``add.s(2, 2)``, ``signature("app.add")``."""

    #: True once ``freeze`` made its ``task_id`` (so it was never sent: ``Envelope.fresh``);
    #: not copied by ``clone``.
    fresh = False

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
        """The plain signature that ``to_dict`` made (``flask_tasks.groups.from_dict``
        reads any workflow)."""
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

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, Signature):
            return chain(self, other)
        return NotImplemented

    s = clone

    # -- composition: what the workflow types below build on -----------------------------

    def copy(self) -> Signature:
        """A deep enough copy to assign ids to without touching this one."""
        return self.clone()

    def freeze(self) -> None:
        """Assign the ids of every task to send (idempotent)."""
        if "task_id" not in self.options:
            self.options["task_id"] = new_id()
            self.fresh = True

    def final_ids(self) -> list[str]:
        """Ids of the tasks whose results are this workflow's result (after ``freeze``)."""
        return [self.options["task_id"]]

    def handle(self, runtime: Runtime) -> Result:
        """The caller's handle on the (frozen) workflow's result."""
        return AsyncResult(self.options["task_id"], runtime, self.task)

    def attach(self, chord_info: dict[str, Any]) -> None:
        """Make the end of this workflow count as one member of a chord."""
        self.options["chord"] = chord_info

    def send_frozen(
        self, runtime: Runtime, args: Sequence[Any], rest: Sequence[dict[str, Any]]
    ) -> list[str]:
        """Send this (frozen) workflow with ``args`` prepended, followed by the chain steps
        ``rest``; returns the ids sent now."""
        call = self.clone(args)
        if rest:
            call.options["chain"] = list(rest)
        send(runtime, call.task, call.args, call.kwargs, call.options)
        return [call.options["task_id"]]

    def run_eagerly(self, runtime: Runtime, args: Sequence[Any]) -> Result:
        """Run this workflow here and now (``TASKS_ALWAYS_EAGER``)."""
        call = self.clone(args)
        call.options.pop("chord", None)
        result: Result = send(runtime, call.task, call.args, call.kwargs, call.options)
        return result


def signatures(items: Iterable[Any], what: str) -> tuple[Signature, ...]:
    found = tuple(items)
    for item in found:
        if not isinstance(item, Signature):
            raise TypeError(f"{what} takes signatures (task.s(...)), got {item!r}")
    return found


def entry_of(signatures: Sequence[Signature]) -> Owner | None:
    return next((sig.extension for sig in signatures if sig.extension is not None), None)


class Workflow(Signature):
    """What chain, group and chord share: sending and running eagerly from the top."""

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> Any:
        """Send the workflow; returns the handle on its final result at once."""
        del kwargs  # a workflow takes positional arguments for its first tasks
        runtime = _runtime_for(self.extension)
        on_commit, session = options.pop("on_commit", False), options.pop("session", None)
        check_options(on_commit, session, None)
        if options.get("connection") is not None:
            raise TypeError(
                f"connection= sends one task in your transaction; a {type(self).__name__} "
                "takes on_commit=True (sent when the session commits)"
            )
        if runtime.config.always_eager:
            if on_commit:
                raise TypeError(
                    f"on_commit=True is not available for a {type(self).__name__} in eager "
                    "mode (TASKS_ALWAYS_EAGER): call it after the commit"
                )
            return self._frozen(options).run_eagerly(runtime, tuple(args))
        with collector_paused():
            workflow = self._frozen(options)
            if on_commit:
                send = partial(workflow.send_frozen, runtime, tuple(args), [])
                call_on_commit(runtime, send, session=session, label=repr(workflow))
            else:
                workflow.send_frozen(runtime, tuple(args), [])
            return workflow.handle(runtime)

    def _frozen(self, options: Mapping[str, Any]) -> Signature:
        """A copy with ``options`` and every id assigned."""
        workflow = self.copy()
        workflow.options.update(options)
        workflow.freeze()
        return workflow

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(
        self, args: Sequence[Any] = (), kwargs: Optional[Mapping[str, Any]] = None, **options: Any
    ) -> EagerResult:
        raise TypeError(
            f"{type(self).__name__}.apply() is not available: call it, or use eager mode"
        )


class chain(Workflow):
    """Run signatures one after another, each getting the previous result first."""

    def __init__(self, *tasks: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            tasks = tuple(tasks[0])
        steps: list[Signature] = []
        for step in signatures(tasks, "chain()"):
            steps.extend(step.tasks if isinstance(step, chain) else [step])
        if not steps:
            raise ValueError("chain() needs at least one signature")
        self.tasks: tuple[Signature, ...] = tuple(steps)
        super().__init__("chain", extension=entry_of(steps))

    def __repr__(self) -> str:
        return " | ".join(repr(task) for task in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "chain", "tasks": [step.to_dict() for step in self.tasks]}

    def copy(self) -> chain:
        made = chain(*(step.copy() for step in self.tasks))
        made.options = dict(self.options)
        return made

    def freeze(self) -> None:
        first = self.tasks[0]
        first.options.update(self.options)  # call options apply to the first task
        self.options = {}
        for step in self.tasks:
            step.freeze()

    def final_ids(self) -> list[str]:
        return self.tasks[-1].final_ids()

    def handle(self, runtime: Runtime) -> Result:
        return self.tasks[-1].handle(runtime)

    def attach(self, chord_info: dict[str, Any]) -> None:
        self.tasks[-1].attach(chord_info)

    def send_frozen(
        self, runtime: Runtime, args: Sequence[Any], rest: Sequence[dict[str, Any]]
    ) -> list[str]:
        steps = [step.to_dict() for step in self.tasks[1:]]
        return self.tasks[0].send_frozen(runtime, args, [*steps, *rest])

    def run_eagerly(self, runtime: Runtime, args: Sequence[Any]) -> Result:
        result = self.tasks[0].run_eagerly(runtime, args)
        for step in self.tasks[1:]:
            result = step.run_eagerly(runtime, (result.get(),))
        return result
