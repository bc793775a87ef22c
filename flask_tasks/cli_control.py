"""``flask tasks status`` and ``flask tasks rate-limit``, and how every command of
Flask-Tasks loads the app: configuration errors as one line (exit status 2), and without
an app, how to point Flask at it.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import Any, Callable, Optional, TypeVar

import click
from flask import Flask, current_app
from flask.cli import NoAppException, ScriptInfo

from .config_entries import parse_rate
from .exceptions import ImproperlyConfigured, NotRegistered
from .runtime import Runtime, current_runtime, runtime_of
from .worker.monitor import RATE_LIMITS

F = TypeVar("F", bound=Callable[..., Any])

_HOW_TO_POINT = (
    "Point Flask at the app that calls tasks.init_app(app): 'flask --app yourapp {command}' "
    "(a module, or a factory such as 'yourapp:create_app()'), or set FLASK_APP."
)


class ConfigurationError(click.ClickException):
    """A configuration error: one line on stderr, exit status 2."""

    exit_code = 2


def load_app(command: str) -> Flask:
    """The app Flask was pointed at, its context pushed for the rest of the command."""
    if current_app:
        return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]
    context = click.get_current_context()
    info = context.ensure_object(ScriptInfo)
    try:
        app = info.load_app()
        runtime_of(app)
    except NoAppException as error:
        message = error.format_message().strip()
        raise ConfigurationError(f"{message}\n{_HOW_TO_POINT.format(command=command)}") from None
    except ImproperlyConfigured as error:
        raise ConfigurationError(str(error)) from None
    except RuntimeError as error:  # an app without Flask-Tasks
        raise ConfigurationError(str(error)) from None
    context.with_resource(app.app_context())
    return app


def with_app(function: F) -> F:
    """Like Flask's ``with_appcontext``, with :func:`load_app`'s errors."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        context: Optional[click.Context] = click.get_current_context()
        names: list[str] = []
        while context is not None and context.parent is not None:  # up to, not with, flask
            names.insert(0, context.info_name or "")
            context = context.parent
        load_app(" ".join(names))
        return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def known_queues(runtime: Runtime, workers: Optional[list[dict[str, Any]]] = None) -> set[str]:
    """Queues the app names (default queue, routes, task and annotation options) and
    those live workers consume."""
    queues = {runtime.config.default_queue}
    for target in runtime.config.routes.values():
        queue = target if isinstance(target, str) else target.get("queue")
        if queue:
            queues.add(queue)
    for name in runtime.registry:
        queue = runtime.options_for(name).get("queue")
        if queue:
            queues.add(queue)
    for info in workers or []:
        queues.update(info.get("queues") or [])
    return queues


def store_now(runtime: Runtime) -> float:
    """Unix time by the store's clock, which workers stamp their heartbeats by (this
    host's clock where the store keeps none of its own)."""
    server = runtime.store.server_time()
    return server if server is not None else time.time()


def live_workers(runtime: Runtime) -> list[dict[str, Any]]:
    """Live workers, one entry per worker process group (prefork children together)."""
    grouped: dict[tuple[str, Any], dict[str, Any]] = {}
    now = store_now(runtime)
    for raw in runtime.store.workers().values():
        try:
            info = json.loads(raw)
        except ValueError:
            continue
        key = (info.get("hostname"), info.get("parent") or info.get("pid"))
        entry = grouped.setdefault(
            key,
            {
                "hostname": info.get("hostname"),
                "pool": info.get("pool") or "?",
                "concurrency": info.get("concurrency") or 0,
                "queues": info.get("queues") or [],
                "pids": [],
                "heartbeat_age": None,
                "running": [],
                "done": 0,
                "autoscale": info.get("autoscale"),
            },
        )
        if info.get("pool") == "prefork":  # one child each; the parent's size is theirs
            entry["concurrency"] = len(entry["pids"]) + 1
        entry["pids"].append(info.get("pid"))
        entry["running"] += info.get("running") or []
        entry["done"] += info.get("done") or 0
        age = round(max(0.0, now - float(info.get("at") or now)), 1)
        if entry["heartbeat_age"] is None or age < entry["heartbeat_age"]:
            entry["heartbeat_age"] = age
    return sorted(grouped.values(), key=lambda entry: str(entry["hostname"]))


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("-Q", "--queues", "extra", default="", help="More queues to show, comma-separated.")
@with_app
def status_command(as_json: bool, extra: str) -> None:
    """Show queues (ready, delayed, reserved) and live workers with their running tasks.

    Exits with status 1 when a queue has ready messages and no live worker consumes it.
    """
    runtime = current_runtime()
    workers = live_workers(runtime)
    queues = known_queues(runtime, workers) | {name for name in extra.split(",") if name}
    counts = runtime.transport.queue_counts(sorted(queues))
    consumed = {queue for worker in workers for queue in worker["queues"]}
    stranded = [queue for queue, count in counts.items() if count.ready and queue not in consumed]
    if as_json:
        report = {
            "queues": {
                queue: {"ready": c.ready, "delayed": c.delayed, "reserved": c.reserved}
                for queue, c in counts.items()
            },
            "workers": workers,
            "unconsumed": stranded,
        }
        click.echo(json.dumps(report, indent=2))
    else:
        _print_status(counts, workers)
    for queue in stranded:
        click.echo(
            f"Queue {queue!r} has {counts[queue].ready} ready message(s) and no live worker "
            "consumes it",
            err=True,
        )
    if stranded:
        sys.exit(1)


def _print_status(counts: dict[str, Any], workers: list[dict[str, Any]]) -> None:
    def shown(value: Optional[int]) -> str:
        return "?" if value is None else str(value)

    click.echo(f"{'queue':<24} {'ready':>8} {'delayed':>8} {'reserved':>8}")
    for queue, count in counts.items():
        click.echo(
            f"{queue:<24} {count.ready:>8} {shown(count.delayed):>8} {shown(count.reserved):>8}"
        )
    click.echo(f"\n{len(workers)} live worker(s)")
    for worker in workers:
        size = worker["concurrency"]
        if worker["autoscale"]:
            size = f"{size} (autoscale {worker['autoscale'][0]},{worker['autoscale'][1]})"
        click.echo(
            f"  {worker['hostname']}  pool={worker['pool']}  concurrency={size}  "
            f"heartbeat {worker['heartbeat_age']}s ago  queues={','.join(worker['queues'])}"
        )
        for task in worker["running"]:
            click.echo(f"    {task['id']}  {task['task']}  running {task['seconds']:.1f}s")


@click.command("rate-limit")
@click.argument("task_name")
@click.argument("rate", required=False)
@click.option("--reset", is_flag=True, help="Go back to the rate set in code or config.")
@with_app
def rate_limit_command(task_name: str, rate: Optional[str], reset: bool) -> None:
    """Change TASK_NAME's rate limit on every running worker (within a second).

    RATE is like 10/s, 100/m or 1000/h; 0 removes the limit. It applies across all
    workers, and lasts until changed again or --reset.
    """
    runtime = current_runtime()
    try:
        runtime.get_task(task_name)
    except NotRegistered as error:
        raise click.ClickException(str(error)) from None
    if reset == (rate is not None):
        raise click.UsageError("give a RATE such as 10/s, or --reset")
    if rate is None:
        runtime.store.set_value(RATE_LIMITS, task_name, None)
        click.echo(f"Rate limit of {task_name} reset to its configured value.")
        return
    try:
        parse_rate(rate)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="RATE") from None
    runtime.store.set_value(RATE_LIMITS, task_name, rate.encode())
    click.echo(f"Rate limit of {task_name} set to {rate} on every worker.")
