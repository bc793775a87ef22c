"""The gevent and eventlet pools: the threads pool, in a process whose threads, sockets
and locks are greenlets, patched before the app is imported.

Patching must come before anything imports ``socket``, ``threading`` or the app, and by
the time ``flask worker`` runs, Flask has loaded the app to find the command. So
``flask worker -P gevent`` starts the same command line again in a fresh interpreter that
patches first and then runs Flask's CLI (:func:`restart_patched`); the app is imported
twice, once unpatched and briefly. ``FLASK_TASKS_GREEN`` marks the patched process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import Any, NoReturn

from ..exceptions import ImproperlyConfigured
from .control import Interrupt

GREEN_POOLS = ("gevent", "eventlet")
#: Set in the environment of the patched process: the pool it patched for.
ENVIRONMENT_KEY = "FLASK_TASKS_GREEN"

_PATCH = {
    "gevent": "from gevent import monkey; monkey.patch_all()",
    "eventlet": "import eventlet; eventlet.monkey_patch()",
}
_RUN_FLASK = "import sys; from flask.cli import main; sys.argv[0] = 'flask'; main()"


def require(pool: str) -> None:
    """Raise ImproperlyConfigured, naming what to install, when ``pool``'s package is
    missing or cannot be imported on this Python."""
    if importlib.util.find_spec(pool) is None:
        raise ImproperlyConfigured(
            f"The {pool} pool needs the {pool} package: pip install 'Flask-Tasks[{pool}]'"
        )


def is_patched(pool: str) -> bool:
    """True when this process was monkey-patched by ``pool``."""
    if os.environ.get(ENVIRONMENT_KEY) != pool:
        return False
    if pool == "gevent":
        from gevent import monkey

        return bool(monkey.is_module_patched("socket"))
    import eventlet.patcher

    return bool(eventlet.patcher.is_monkey_patched("socket"))


def restart_patched(pool: str) -> NoReturn:
    """Run this command line again in an interpreter patched by ``pool``."""
    require(pool)
    code = f"{_PATCH[pool]}\n{_RUN_FLASK}"
    argv = [sys.executable, "-c", code, *sys.argv[1:]]
    env = {**os.environ, ENVIRONMENT_KEY: pool}
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.platform == "win32":  # no exec there: run it as a child and pass its status on
        sys.exit(subprocess.call(argv, env=env))
    os.execve(sys.executable, argv, env)


def greenlet_interrupter(pool: str) -> Interrupt:
    """An interrupt for the calling greenlet: throws the exception into it, which ends a
    cooperative wait (``sleep``, socket read, lock) at once."""
    if pool == "gevent":
        import gevent

        glet: Any = gevent.getcurrent()
        return lambda exc_type: gevent.kill(glet, exc_type)
    from eventlet import greenthread

    current: Any = greenthread.getcurrent()
    return lambda exc_type: greenthread.kill(current, exc_type)
