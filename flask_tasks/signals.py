"""Blinker signals sent by Flask-Tasks (names and keyword arguments follow Celery's).

Connect with ``@task_success.connect`` or ``task_success.connect(handler, sender=add)`` to
listen to one task only. Handlers run in the process that sends: the caller for the publish
signals, the worker for the others, inside the app context of the task.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

before_task_publish = _signals.signal("before-task-publish")
"""Sender: the task name. Keywords: ``body`` (message dict), ``exchange`` (always ""),
``routing_key`` (queue), ``headers``, ``properties`` (eta, priority), ``declare`` (empty),
``retry_policy``. Raising aborts the publish."""

after_task_publish = _signals.signal("after-task-publish")
"""Sender: the task name. Keywords: ``body``, ``exchange``, ``routing_key``, ``headers``."""

task_received = _signals.signal("task-received")
"""Sender: the worker's task runner. Keywords: ``request`` (the task's ``Request``)."""

task_prerun = _signals.signal("task-prerun")
"""Sender: the task. Keywords: ``task_id``, ``task``, ``args``, ``kwargs``."""

task_postrun = _signals.signal("task-postrun")
"""Sender: the task. Keywords: ``task_id``, ``task``, ``args``, ``kwargs``, ``retval``,
``state``."""

task_success = _signals.signal("task-success")
"""Sender: the task. Keywords: ``result``."""

task_failure = _signals.signal("task-failure")
"""Sender: the task. Keywords: ``task_id``, ``exception``, ``args``, ``kwargs``,
``traceback``, ``einfo``."""

task_retry = _signals.signal("task-retry")
"""Sender: the task. Keywords: ``request``, ``reason`` (the exception), ``einfo``."""

task_revoked = _signals.signal("task-revoked")
"""Sender: the task (or its name if unknown). Keywords: ``request``, ``terminated``,
``signum``, ``expired``."""

task_unknown = _signals.signal("task-unknown")
"""Sender: the worker's task runner. Keywords: ``name``, ``id``, ``message`` (raw body),
``exc`` (the ``NotRegistered`` error)."""

worker_ready = _signals.signal("worker-ready")
"""Sender: the worker. No keywords."""

worker_shutdown = _signals.signal("worker-shutdown")
"""Sender: the worker. No keywords."""

beat_tick = _signals.signal("beat-tick")
"""Sender: the scheduler. Keywords: ``due`` (names of the entries sent this tick, possibly
none); sent every tick."""

__all__ = [
    "after_task_publish",
    "beat_tick",
    "before_task_publish",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_ready",
    "worker_shutdown",
]
