"""``flask worker``: Flask-Tasks on Flask's own command line.

Registered on the app by ``init_app``, so ``flask --app example_app worker`` finds the
app the way every other ``flask`` command does: no ``-A module.celery`` path.
"""

from __future__ import annotations

import sys
from typing import Optional

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo, with_appcontext

from .exceptions import ImproperlyConfigured, OperationalError
from .worker import POOLS, Worker

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _queue_list(
    _ctx: click.Context, _param: click.Parameter, value: Optional[str]
) -> Optional[list[str]]:
    if not value:
        return None
    queues = [name.strip() for name in value.split(",") if name.strip()]
    if not queues:
        raise click.BadParameter("give one or more queue names separated by commas")
    return queues


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
    help="prefork (default on POSIX), threads (default on Windows), or solo.",
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
@click.option("-n", "--hostname", help="Name of this worker in logs and results.")
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="Replace a child process after it ran this many tasks.",
)
@click.option("--burst", is_flag=True, help="Run what is queued now, then exit.")
@with_appcontext
def worker_command(
    concurrency: Optional[int],
    pool: Optional[str],
    queues: Optional[list[str]],
    prefetch: Optional[int],
    loglevel: str,
    hostname: Optional[str],
    max_tasks_per_child: Optional[int],
    burst: bool,
) -> None:
    """Run a worker that executes this app's tasks."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    script_info = click.get_current_context().find_object(ScriptInfo)
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
        )
        if burst and worker.pool == "prefork":
            worker.pool = "solo"
        click.echo(worker.banner(), err=True)
        sys.exit(worker.start())
    except (ImproperlyConfigured, OperationalError) as error:
        raise click.ClickException(str(error)) from error


def register_commands(app: Flask) -> None:
    """Add the Flask-Tasks commands to ``app.cli``."""
    if "worker" not in app.cli.commands:
        app.cli.add_command(worker_command)
