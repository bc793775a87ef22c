"""The store part of ``memory://``: records, revocations, counters, claims, heartbeats.

Dictionaries guarded by one lock; a condition variable wakes result watchers (and, in
:class:`.MemoryBroker`, waiting consumers). Expired entries are dropped in bounded batches
as time passes, oldest expiry first.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Optional, cast

from ..exceptions import ImproperlyConfigured
from .base import Store

#: Most expired entries one write drops.
_SWEEP_BATCH = 1000


def _expiry(entry: object) -> Optional[float]:
    """The expiry of a stored entry: the entry itself (a float) or its last item."""
    if isinstance(entry, tuple):
        return cast(Optional[float], entry[-1])
    return cast(float, entry)


class MemoryStore(Store):
    """A store in this process's memory."""

    kind = "memory"

    def __init__(self, url: str = "memory://", **options: object) -> None:
        if options:
            raise ImproperlyConfigured(
                f"The memory:// broker takes no options; got {', '.join(sorted(options))} "
                "(TASKS_BROKER_OPTIONS)"
            )
        self.url = url
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._results: dict[str, tuple[bytes, float | None]] = {}
        self._revoked: dict[str, float] = {}
        self._terminate: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._claims: dict[str, float] = {}
        self._workers: dict[str, tuple[bytes, float]] = {}
        #: task id -> (lease token, expiry or None) (``fence``).
        self._fences: dict[str, tuple[str, float | None]] = {}
        self._values: dict[str, dict[str, bytes]] = {}
        #: (expires_at, table, key) for everything with a ttl but messages and leases.
        self._expiries: list[tuple[float, str, str]] = []

    # -- internal helpers (lock held) -----------------------------------------------------

    def _expire_later(self, table: str, key: str, expires_at: float | None) -> None:
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, table, key))

    def _sweep(self, now: float) -> None:
        """Drop a bounded batch of expired entries (results, revocations, counters...)."""
        tables: dict[str, dict[str, Any]] = {
            "results": self._results,
            "revoked": self._revoked,
            "terminate": self._terminate,
            "counters": self._counters,
            "claims": self._claims,
            "workers": self._workers,
            "fences": self._fences,
        }
        for _ in range(_SWEEP_BATCH):
            if not self._expiries or self._expiries[0][0] > now:
                break
            expires_at, table, key = heapq.heappop(self._expiries)
            entries = tables[table]
            entry = entries.get(key)
            # Only if not written again since: a later write pushed its own entry.
            if entry is not None and _expiry(entry) == expires_at:
                del entries[key]

    def _write_result(self, task_id: str, record: bytes, ttl: float, now: float) -> None:
        expires_at = now + ttl if ttl else None
        self._results[task_id] = (record, expires_at)
        self._expire_later("results", task_id, expires_at)
        self._sweep(now)
        self._changed.notify_all()

    def _read_result(self, task_id: str, now: float) -> bytes | None:
        entry = self._results.get(task_id)
        if entry is None:
            return None
        record, expires_at = entry
        if expires_at is not None and expires_at <= now:
            del self._results[task_id]
            return None
        return record

    # -- results --------------------------------------------------------------------------

    def set_result(self, task_id: str, record: bytes, ttl: float) -> None:
        with self._lock:
            self._write_result(task_id, record, ttl, self.now())

    def set_results(self, records: Mapping[str, bytes], ttl: float) -> None:
        with self._lock:
            now = self.now()
            for task_id, record in records.items():
                self._write_result(task_id, record, ttl, now)

    fences_records = True

    def fence(self, task_id: str, token: str, ttl: float) -> None:
        with self._lock:
            now = self.now()
            expires_at = now + ttl if ttl else None
            self._fences[task_id] = (token, expires_at)
            self._expire_later("fences", task_id, expires_at)

    def set_results_fenced(self, records: Mapping[str, tuple[bytes, str]], ttl: float) -> list[str]:
        refused = []
        with self._lock:
            now = self.now()
            for task_id, (record, token) in records.items():
                fence = self._fences.get(task_id)
                if token and fence and fence[0] != token and (fence[1] is None or fence[1] > now):
                    refused.append(task_id)
                    continue
                if not token:
                    self._fences.pop(task_id, None)
                self._write_result(task_id, record, ttl, now)
        return refused

    def get_result(self, task_id: str) -> bytes | None:
        with self._lock:
            return self._read_result(task_id, self.now())

    def forget_result(self, task_id: str) -> None:
        with self._lock:
            self._results.pop(task_id, None)
            self._changed.notify_all()

    def watch_result(self, task_id: str, last: bytes | None, timeout: float) -> bytes | None:
        with self._lock:
            deadline = self.now() + timeout
            while True:
                current = self._read_result(task_id, self.now())
                remaining = deadline - self.now()
                if current != last or remaining <= 0:
                    return current
                self._changed.wait(remaining)

    # -- revocation -----------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], ttl: float, terminate: bool = False) -> None:
        with self._lock:
            now = self.now()
            for task_id in task_ids:
                self._revoked[task_id] = now + ttl
                self._expire_later("revoked", task_id, now + ttl)
                if terminate:  # a revocation without terminate leaves the mark in place
                    self._terminate[task_id] = now + ttl
                    self._expire_later("terminate", task_id, now + ttl)
            self._sweep(now)

    def revoked(self, task_ids: Sequence[str]) -> set[str]:
        with self._lock:
            now = self.now()
            return {tid for tid in task_ids if self._revoked.get(tid, 0) > now}

    def terminating(self, task_ids: Sequence[str]) -> set[str]:
        with self._lock:
            now = self.now()
            return {tid for tid in task_ids if self._terminate.get(tid, 0) > now}

    def incr(self, key: str, ttl: float) -> int:
        with self._lock:
            now = self.now()
            value, expires_at = self._counters.get(key, (0, now + ttl))
            if expires_at <= now:
                value = 0
            self._counters[key] = (value + 1, now + ttl)
            self._expire_later("counters", key, now + ttl)
            return value + 1

    def claim(self, key: str, ttl: float) -> bool:
        with self._lock:
            now = self.now()
            if self._claims.get(key, 0) > now:
                return False
            self._claims[key] = now + ttl
            self._expire_later("claims", key, now + ttl)
            self._sweep(now)
            return True

    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        with self._lock:
            now = self.now()
            self._workers[worker] = (info, now + ttl)
            self._expire_later("workers", worker, now + ttl)
            self._sweep(now)

    def workers(self) -> dict[str, bytes]:
        with self._lock:
            now = self.now()
            return {
                name: info for name, (info, expires_at) in self._workers.items() if expires_at > now
            }

    def set_value(self, namespace: str, key: str, value: bytes | None) -> None:
        with self._lock:
            values = self._values.setdefault(namespace, {})
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value

    def get_values(self, namespace: str) -> dict[str, bytes]:
        with self._lock:
            return dict(self._values.get(namespace, {}))

    def ping(self) -> None:
        """Always answers: the store is this process."""
