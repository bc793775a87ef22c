"""``flask worker``: Flask-Tasks on Flask's own command line.

Registered on the app by ``init_app``, so ``flask --app example_app worker`` finds the
app the way every other ``flask`` command does: no ``-A module.celery`` path.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import datetime, timezone
from typing import Optional

import click
from flask import Flask
from flask.cli import ScriptInfo

from .beat import Beat
from .cli_control import (
    ConfigurationError,
    known_queues,
    load_app,
    rate_limit_command,
    status_command,
    with_app,
)
from .exceptions import ImproperlyConfigured, OperationalError
from .runtime import current_runtime
from .worker import POOLS, Worker, default_pool
from .worker.green import GREEN_POOLS, is_patched, restart_patched
from .worker.logs import configure_logging
from .worker.scaling import parse_autoscale

#: What ``flask tasks inspect`` shows of a record.
_RECORD_FIELDS = (
    "state",
    "result",
    "traceback",
    "task",
    "date_done",
    "parent_id",
    "children",
    "retries",
    "worker",
)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _queue_list(
    _ctx: click.Context, _param: click.Parameter, value: Optional[str]
) -> Optional[list[str]]:
    if value is None:  # not given: the default queue (an empty -Q "" is an error)
        return None
    queues = [name.strip() for name in value.split(",") if name.strip()]
    if not queues:
        raise click.BadParameter("give one or more queue names separated by commas")
    return queues


def _autoscale(
    _ctx: click.Context, _param: click.Parameter, value: Optional[str]
) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    try:
        return parse_autoscale(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command("worker")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Processes or threads running tasks (default: number of CPUs).",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(POOLS),
    help="prefork (default on POSIX), threads (default on Windows), solo, gevent or "
    "eventlet (the last two need their extra: pip install 'Flask-Tasks[gevent]').",
)
@click.option(
    "-Q",
    "--queues",
    callback=_queue_list,
    help="Comma-separated queues to consume, in order of precedence.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=0),
    help="Messages a worker process holds beyond those running.",
)
@click.option(
    "-l",
    "--loglevel",
    default="INFO",
    show_default=True,
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
)
@click.option(
    "-n",
    "--hostname",
    help="Name of this worker in logs and results (%h: host name, as in Celery).",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="Replace a child process after it ran this many tasks.",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    metavar="KIB",
    help="Replace a child process after the task that took it past this resident memory "
    "(KiB); threads and solo restart the worker process.",
)
@click.option(
    "--autoscale",
    callback=_autoscale,
    metavar="MAX,MIN",
    help="prefork and threads: between MIN and MAX processes or threads, by the backlog.",
)
@click.option("--burst", is_flag=True, help="Run what is queued now, then exit.")
@click.option("-B", "--beat", is_flag=True, help="Also send periodic tasks (as flask beat does).")
def worker_command(
    concurrency: Optional[int],
    pool: Optional[str],
    queues: Optional[list[str]],
    prefetch: Optional[int],
    loglevel: str,
    hostname: Optional[str],
    max_tasks_per_child: Optional[int],
    max_memory_per_child: Optional[int],
    autoscale: Optional[tuple[int, int]],
    burst: bool,
    beat: bool,
) -> None:
    """Run a worker that executes this app's tasks."""
    if pool in GREEN_POOLS and not is_patched(pool):
        try:
            restart_patched(pool)  # patch before the app is imported
        except ImproperlyConfigured as error:
            raise ConfigurationError(str(error)) from None
    app: Flask = load_app("worker")
    script_info = click.get_current_context().find_object(ScriptInfo)
    if burst and (pool or default_pool()) == "prefork":
        pool = "solo"  # a burst drains the queues in this process: no children
    try:
        worker = Worker(
            app,
            concurrency=concurrency,
            pool=pool,
            queues=queues,
            prefetch=prefetch,
            hostname=hostname,
            loglevel=loglevel,
            max_tasks_per_child=max_tasks_per_child,
            burst=burst,
            app_import_path=script_info.app_import_path if script_info else None,
            beat=beat,
            autoscale=autoscale,
            max_memory_per_child=max_memory_per_child,
        )
    except ImproperlyConfigured as error:
        raise ConfigurationError(str(error)) from None
    click.echo(worker.banner(), err=True)
    try:
        sys.exit(worker.start())
    except (ImproperlyConfigured, OperationalError) as error:
        raise click.ClickException(str(error)) from error


@click.group("tasks")
def tasks_group() -> None:
    """Inspect and manage queued, failed and finished tasks."""


@tasks_group.command("inspect")
@click.argument("task_id")
@with_app
def inspect_command(task_id: str) -> None:
    """Show the stored state of a task."""
    record = current_runtime().read(task_id)
    if record is None:
        raise click.ClickException(
            f"No task {task_id!r} is known: never sent, ignored its result, or expired"
        )
    shown = {name: getattr(record, name) for name in _RECORD_FIELDS}
    shown["error"] = record.error.to_dict() if record.error else None
    click.echo(json.dumps({"id": task_id, **shown}, indent=2, default=str))


@tasks_group.command("purge")
@click.argument("queue")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@with_app
def purge_command(queue: str, force: bool) -> None:
    """Drop every ready message of QUEUE."""
    runtime = current_runtime()
    transport = runtime.transport
    known = known_queues(runtime)
    if queue not in known and not transport.queue_length(queue):
        raise click.ClickException(
            f"No queue {queue!r} is known to this app (it names {', '.join(sorted(known))}) "
            "and it holds no ready messages"
        )
    if not force:
        count = transport.queue_length(queue)
        click.confirm(f"Drop {count} ready message(s) from {queue!r}?", abort=True)
    dropped = transport.purge(queue)
    click.echo(f"Purged {dropped} message(s) from {queue!r}.")


@tasks_group.command("revoke")
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True, help="Also stop the task if it is running.")
@with_app
def revoke_command(task_ids: tuple[str, ...], terminate: bool) -> None:
    """Revoke tasks: workers will not run them (or stop them, with --terminate)."""
    current_runtime().revoke(list(task_ids), terminate=terminate)
    click.echo(f"Revoked {len(task_ids)} task(s).")


@tasks_group.command("failed")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@with_app
def failed_command(limit: int) -> None:
    """List dead letters: messages no worker could process, newest first."""
    letters = current_runtime().transport.dead_letters(limit)
    if not letters:
        click.echo("No dead letters.")
    for letter in letters:
        when = datetime.fromtimestamp(letter.failed_at, timezone.utc).isoformat(timespec="seconds")
        click.echo(f"{letter.id}  queue={letter.queue}  at={when}\n    {letter.reason}")


@tasks_group.command("retry")
@click.argument("message_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead letter.")
@with_app
def retry_command(message_ids: tuple[str, ...], retry_all: bool) -> None:
    """Put dead letters back on their queues (after fixing what made them fail)."""
    broker = current_runtime().transport
    if retry_all == bool(message_ids):
        raise click.UsageError("give dead-letter ids, or --all")
    if retry_all:
        message_ids = tuple(letter.id for letter in broker.dead_letters(1_000_000))
    missing = [message_id for message_id in message_ids if not broker.retry_dead_letter(message_id)]
    click.echo(f"Requeued {len(message_ids) - len(missing)} message(s).")
    if missing:
        raise click.ClickException(f"No dead letter with id: {', '.join(missing)}")


@click.command("beat")
@click.option(
    "-l",
    "--loglevel",
    default="INFO",
    show_default=True,
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
)
@click.option(
    "--max-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Longest sleep between two looks at the schedule, in seconds.",
)
@with_app
def beat_command(loglevel: str, max_interval: float) -> None:
    """Send periodic tasks when they are due (any number may run: each due time is sent
    once)."""
    configure_logging(loglevel)
    try:
        scheduler = Beat(current_runtime(), max_interval=max_interval)
    except ImproperlyConfigured as error:
        raise click.ClickException(str(error)) from error
    if not scheduler.entries:
        raise click.ClickException(
            "No periodic tasks: set TASKS_BEAT_SCHEDULE or call tasks.add_periodic_task()"
        )
    stop = threading.Event()
    for name in ("SIGTERM", "SIGINT"):
        signal.signal(getattr(signal, name), lambda *_: stop.set())
    click.echo(f"flask beat: {len(scheduler.entries)} periodic task(s)", err=True)
    scheduler.run(stop)


@tasks_group.command("schedule")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_app
def schedule_command(as_json: bool) -> None:
    """List the periodic tasks with their last and next run."""
    rows = Beat(current_runtime()).schedule_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No periodic tasks.")
    for row in rows:
        click.echo(
            f"{row['name']}  {row['task']}  {row['schedule']}\n"
            f"    last run: {row['last_run'] or 'never'}  next run: {row['next_run']}"
        )


@tasks_group.command("init-db")
@with_app
def init_db_command() -> None:
    """Create the broker's and the result backend's tables now (they are also created
    on first use): for a deployment step, or a database user allowed DDL only then."""
    runtime = current_runtime()
    try:
        for target in {id(c): c for c in (runtime.transport, runtime.store)}.values():
            create = getattr(target, "create_schema", None)
            if create is None:  # Redis and memory have no tables; SQLite makes its own
                target.ping()
                done = "ready, nothing to create"
            else:
                done = "tables created" if create() else "tables already there"
            click.echo(f"{target.kind} {target.url}: {done}.")
    except OperationalError as error:
        raise click.ClickException(str(error)) from error


tasks_group.add_command(status_command)
tasks_group.add_command(rate_limit_command)


def register_commands(app: Flask) -> None:
    """Add ``flask worker``, ``flask beat`` and ``flask tasks ...`` to ``app.cli``."""
    for command in (worker_command, beat_command, tasks_group):
        if command.name not in app.cli.commands:
            app.cli.add_command(command)
