"""The arguments of ``lua/publish_many.lua``: many fresh messages, ready now, in one step.

A group's members share their queue and priority, so the script takes each ready list
once, with the ids and bodies to push on it, rather than a list and a wake list per
message (``publish.lua``): fewer arguments for the caller to pack and the server to read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from .base import Envelope, check_envelope
from .redis_keys import RedisKeys

#: Fewest messages sent through ``publish_many.lua`` (fewer go through ``publish.lua``).
MANY = 2


def publish_many_call(
    keys: RedisKeys,
    envelopes: Sequence[Envelope],
    records: Mapping[str, bytes],
    record_ttl_ms: int,
    records_db: str,
    now: float,
) -> Optional[tuple[list[str], list[Any]]]:
    """KEYS and ARGV of ``publish_many.lua`` for ``envelopes`` and their records; None
    unless there are at least ``MANY`` of them, all fresh and ready at ``now``."""
    if len(envelopes) < MANY:
        return None
    lists: dict[tuple[str, int], list[Any]] = {}
    for envelope in envelopes:
        if not envelope.fresh or (envelope.eta is not None and envelope.eta > now):
            return None
        check_envelope(envelope)
        batch = lists.get((envelope.queue, envelope.priority))
        if batch is None:
            batch = lists[envelope.queue, envelope.priority] = []
        batch += (envelope.id, envelope.body)
    script_keys = keys.core()
    script_keys += [keys.ready_list(queue, priority) for queue, priority in lists]
    script_keys += [keys.wake_list(queue) for queue, _priority in lists]
    result = keys.result
    script_keys += [result(task_id) for task_id in records]
    args: list[Any] = [len(lists), record_ttl_ms, records_db]
    for (queue, priority), batch in lists.items():
        args += (queue, priority, len(batch) // 2)
    for batch in lists.values():
        args += batch
    args += records.values()
    return script_keys, args
