"""PostgreSQL for the test session: the machine's server, or a throwaway one.

:func:`postgres_server` yields the URL of a server to administer: the one at
``FLASK_TASKS_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``,
trust auth, as on this machine kind and in CI) when it answers, else a private server made
with ``initdb`` in a temporary folder and started with ``pg_ctl`` on a free port (as the
``postgres`` user when running as root). :func:`scratch_database` makes a database of its own
on it and drops it afterwards. Either raises RuntimeError, never skips, when it cannot.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg
from redis_server import free_port

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise RuntimeError(
            f"No PostgreSQL server answers and {name} is not installed: start PostgreSQL at "
            "127.0.0.1:5432 (trust auth) or install the postgresql package"
        )
    return path


@contextmanager
def throwaway_server() -> Iterator[str]:
    """``initdb`` + ``pg_ctl start`` in a temporary folder, on a free loopback port."""
    workdir = tempfile.mkdtemp(prefix="flask-tasks-postgres-")
    data, port = os.path.join(workdir, "data"), free_port()
    prefix: list[str] = []
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(workdir, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    pg_ctl = _binary("pg_ctl")

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")

    try:
        run(_binary("initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(pg_ctl, "-D", data, "-o", options, "-l", os.path.join(workdir, "log"), "-w", "start")
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while not answers(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the throwaway PostgreSQL on port {port} does not answer")
            time.sleep(0.1)
        yield url
    finally:
        with suppress(RuntimeError, subprocess.SubprocessError, OSError):
            run(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def postgres_server(url: str | None = None) -> Iterator[str]:
    """The admin URL of a reachable server: ``url`` (or the machine's) if it answers,
    else a throwaway one for as long as the context lasts."""
    url = url or os.environ.get("FLASK_TASKS_POSTGRES_URL") or DEFAULT_URL
    if answers(url):
        yield url
        return
    with throwaway_server() as started:
        yield started


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A fresh database ``flask_tasks_test_<random>`` on the server; dropped afterwards,
    with whatever connections are still open to it."""
    name = f"flask_tasks_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
