"""What the dashboard and the metrics endpoint show, read from the transport and store.

Everything here is a read for people: queue depths (``Transport.queue_counts``), live
workers and the figures they send with their heartbeats (``Store.workers``), the
schedule (``Beat.schedule_rows``) and dead letters (``Transport.dead_letters``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Optional

from ..beat import Beat
from ..cli_control import known_queues, live_workers
from ..exceptions import DecodeError
from ..message import Message
from ..worker.stats import MINUTES

if TYPE_CHECKING:
    from ..runtime import Runtime

#: Dead letters shown on the dashboard (the newest).
DEAD_LETTERS_SHOWN = 50


def heartbeats(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Each live worker process (``host:pid``) and what its last heartbeat said."""
    infos = {}
    for name, raw in runtime.store.workers().items():
        try:
            info = json.loads(raw)
        except ValueError:
            continue
        if isinstance(info, dict):
            infos[name] = info
    return infos


def queue_rows(runtime: Runtime, workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each known queue with its depth and how many live workers consume it."""
    queues = known_queues(runtime, workers)
    counts = runtime.transport.queue_counts(sorted(queues))
    rows = []
    for queue, count in counts.items():
        consumers = sum(1 for worker in workers if queue in worker["queues"])
        rows.append(
            {
                "name": queue,
                "ready": count.ready,
                "delayed": count.delayed,
                "reserved": count.reserved,
                "consumers": consumers,
                "stranded": bool(count.ready and not consumers),
            }
        )
    return rows


def dead_letter_rows(runtime: Runtime, limit: int = DEAD_LETTERS_SHOWN) -> list[dict[str, Any]]:
    """The newest dead letters, with the task name when the body can be read."""
    rows = []
    for letter in runtime.transport.dead_letters(limit):
        rows.append(
            {
                "id": letter.id,
                "queue": letter.queue,
                "task": _task_name(runtime, letter.body),
                "reason": letter.reason,
                "failed_at": letter.failed_at,
            }
        )
    return rows


def _task_name(runtime: Runtime, body: bytes) -> Optional[str]:
    try:
        return Message.from_dict(runtime.codec.decode(body)).task
    except (DecodeError, ValueError, TypeError, KeyError):
        return None  # unreadable (the reason says why); show the letter anyway


def recent_failures(infos: dict[str, dict[str, Any]], limit: int = 20) -> list[dict[str, Any]]:
    """The latest failures the live workers saw, newest first."""
    failures = [
        {**failure, "worker": name}
        for name, info in infos.items()
        for failure in (info.get("stats") or {}).get("failures") or []
    ]
    failures.sort(key=lambda failure: failure.get("at") or 0, reverse=True)
    return failures[:limit]


def per_minute(
    infos: dict[str, dict[str, Any]], now: Optional[float] = None
) -> list[dict[str, Any]]:
    """One entry per minute of the last hour (oldest first): tasks succeeded and failed,
    summed over the live workers, and their mean run time in seconds."""
    current = int((now if now is not None else time.time()) // 60)
    minutes = {minute: [0, 0, 0.0] for minute in range(current - MINUTES + 1, current + 1)}
    for info in infos.values():
        for minute, succeeded, failed, seconds in (info.get("stats") or {}).get("minutes") or []:
            slot = minutes.get(int(minute))
            if slot is not None:
                slot[0] += int(succeeded)
                slot[1] += int(failed)
                slot[2] += float(seconds)
    return [
        {
            "minute": minute,
            "succeeded": int(succeeded),
            "failed": int(failed),
            "mean_seconds": seconds / (succeeded + failed) if succeeded + failed else None,
        }
        for minute, (succeeded, failed, seconds) in minutes.items()
    ]


def overview(runtime: Runtime) -> dict[str, Any]:
    """Everything the dashboard page shows."""
    infos = heartbeats(runtime)
    workers = live_workers(runtime)
    schedule = Beat(runtime).schedule_rows() if runtime.beat_entries() else []
    return {
        "queues": queue_rows(runtime, workers),
        "workers": workers,
        "schedule": schedule,
        "failures": recent_failures(infos),
        "dead_letters": dead_letter_rows(runtime),
        "minutes": per_minute(infos),
        "broker": runtime.transport.url,
    }


__all__ = ["dead_letter_rows", "heartbeats", "overview", "per_minute", "queue_rows"]
