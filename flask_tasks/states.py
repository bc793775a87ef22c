"""Task states. Any other string is a custom state set with ``update_state``."""

from __future__ import annotations

PENDING = "PENDING"  #: Waiting in a queue, or unknown (as in Celery).
RECEIVED = "RECEIVED"  #: Taken by a worker, not yet started.
STARTED = "STARTED"  #: Running (recorded only for tasks with ``track_started``).
RETRY = "RETRY"  #: Failed and scheduled to run again.
SUCCESS = "SUCCESS"  #: Finished and returned a value.
FAILURE = "FAILURE"  #: Raised an exception (or ran out of retries or time).
REVOKED = "REVOKED"  #: Revoked, or expired before it started.

#: States after which the task will not change again.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
#: States that end a task without a value.
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
#: Ready states that carry an exception.
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED})
