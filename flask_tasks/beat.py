"""``Beat``: sends periodic tasks when they are due (``flask beat``, ``flask worker -B``).

Any number of beats may run, on any number of hosts:

- every beat computes the same due times (crontabs in ``TASKS_TIMEZONE``, intervals as
  multiples of their length since the Unix epoch);
- each due time of each entry is sent by the one beat that claims it first in the store
  (``Store.claim``, keyed by entry and due time), so it is sent exactly once;
- the last due time sent is kept in the store (``Store.set_value``), so a restarted beat
  neither repeats it nor catches up in a burst: after downtime an entry runs once.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Optional

from . import signals
from .canvas import send
from .exceptions import OperationalError
from .periodic import Entry
from .schedules import timezone_named

if TYPE_CHECKING:
    from .runtime import Runtime

logger = logging.getLogger("flask_tasks.beat")

#: Store namespace of the last due time sent, per entry.
LAST_RUN = "beat:last"
#: How long a claim on a due time is kept: longer than any beat can lag behind.
CLAIM_SECONDS = 3600.0


def last_runs(runtime: Runtime) -> dict[str, datetime]:
    """The last due time sent of each entry, from the store."""
    found = {}
    for name, raw in runtime.store.get_values(LAST_RUN).items():
        try:
            found[name] = datetime.fromisoformat(raw.decode())
        except ValueError:
            logger.warning("Ignoring an unreadable last run of %r: %r", name, raw[:40])
    return found


def next_due(entry: Entry, last: Optional[datetime], now: datetime, runtime: Runtime) -> datetime:
    """When ``entry`` is due next: after its last run if it has one (which may be in the
    past, after downtime: it is due at once), else after ``now``."""
    zone = timezone_named(runtime.config.timezone)
    return entry.schedule.next_after(last or now, zone).astimezone(timezone.utc)


class Beat:
    """Sends the due entries of one app (see the module docs for the guarantees)."""

    def __init__(self, runtime: Runtime, max_interval: float = 5.0) -> None:
        self.runtime = runtime
        self.entries = runtime.beat_entries()
        self.max_interval = max_interval
        self._due: dict[str, datetime] = {}

    def start(self, now: Optional[datetime] = None) -> None:
        """Load the last runs from the store and compute each entry's next due time."""
        now = now or datetime.now(timezone.utc)
        last = last_runs(self.runtime)
        self._due = {e.name: next_due(e, last.get(e.name), now, self.runtime) for e in self.entries}
        for entry in self.entries:
            logger.info(
                "Entry %s: %s, %s, next due %s",
                entry.name,
                entry.task,
                entry.schedule.describe(),
                self._due[entry.name].isoformat(timespec="seconds"),
            )

    def tick(self, now: Optional[datetime] = None) -> float:
        """Send what is due; returns the seconds to sleep before the next tick."""
        now = now or datetime.now(timezone.utc)
        zone = timezone_named(self.runtime.config.timezone)
        sent = []
        for entry in self.entries:
            due = self._due[entry.name]
            if due > now:
                continue
            if self._send_once(entry, due):
                sent.append(entry.name)
            # Missed due times (downtime, a slow tick) are skipped: the entry ran once.
            self._due[entry.name] = entry.schedule.next_after(max(due, now), zone).astimezone(
                timezone.utc
            )
        if signals.beat_tick.receivers:
            signals.beat_tick.send(self, due=sent)
        if not self._due:
            return self.max_interval
        wait = (min(self._due.values()) - datetime.now(timezone.utc)).total_seconds()
        return min(max(wait, 0.0), self.max_interval)

    def _send_once(self, entry: Entry, due: datetime) -> bool:
        store = self.runtime.store
        stamp = due.isoformat()
        if not store.claim(f"beat:{entry.name}:{stamp}", CLAIM_SECONDS):
            return False  # another beat sent it
        # The headers say which entry and due time a message is for (logs, inspection).
        headers = {**entry.options.get("headers", {}), "beat_entry": entry.name, "beat_due": stamp}
        options = {**entry.options, "headers": headers}
        with self.runtime.app.app_context():
            result = send(self.runtime, entry.task, entry.args, entry.kwargs, options)
        store.set_value(LAST_RUN, entry.name, stamp.encode())
        logger.info("Sent %s[%s] (entry %s, due %s)", entry.task, result.id, entry.name, stamp)
        return True

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; a store that cannot be reached is retried."""
        logger.info("beat: %d entr%s", len(self.entries), "y" if len(self.entries) == 1 else "ies")
        started = False
        while not stop.is_set():
            try:
                if not started:
                    self.start()
                    started = True
                wait = self.tick()
            except OperationalError as error:
                logger.error("beat: the store is unreachable (%s); retrying", error)
                wait = self.max_interval
            stop.wait(wait)

    def schedule_rows(self, now: Optional[datetime] = None) -> list[dict[str, object]]:
        """Each entry with its last and next run, for ``flask tasks schedule``."""
        now = now or datetime.now(timezone.utc)
        last = last_runs(self.runtime)
        rows: list[dict[str, object]] = []
        for entry in self.entries:
            previous = last.get(entry.name)
            upcoming = next_due(entry, previous, now, self.runtime)
            rows.append(
                {
                    "name": entry.name,
                    "task": entry.task,
                    "schedule": entry.schedule.describe(),
                    "last_run": previous.isoformat() if previous else None,
                    "next_run": max(upcoming, now).isoformat(),
                }
            )
        return rows
