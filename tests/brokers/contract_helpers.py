"""Helpers for the broker contract tests (a module, so spawned processes can import it)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from flask_tasks.brokers import Broker, create_broker


@dataclass
class BrokerSpec:
    """How to open (more) brokers on the store of one test."""

    kind: str
    url: str
    key_prefix: str
    opened: list[Broker] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        """Whether a second broker opened from this spec sees the same store."""
        return self.kind != "memory"

    def open(self) -> Broker:
        broker = create_broker(self.url, key_prefix=self.key_prefix)
        self.opened.append(broker)
        return broker


def eventually(probe: Callable[[], Any], timeout: float = 3.0, interval: float = 0.01) -> Any:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{probe!r} gave nothing truthy within {timeout} s")
        time.sleep(interval)


class Background:
    """Run ``function`` in a thread; ``result()`` joins it (bounded) and returns its value."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(function,), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[[], Any]) -> None:
        try:
            self._value = function()
        except BaseException as exc:  # handed to the test thread by result()
            self._error = exc
        finally:
            self.finished_at = time.monotonic()

    def result(self, timeout: float = 10.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "background call did not return in time"
        if self._error is not None:
            raise self._error
        return self._value


def consume_until_idle(
    url: str, key_prefix: str, queue: str, idle: float, count: int = 3
) -> list[str]:
    """Open a broker, reserve-and-ack from ``queue`` until it stays empty for ``idle``
    seconds, and return the ids taken (the body of a consumer process)."""
    broker = create_broker(url, key_prefix=key_prefix)
    taken: list[str] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            deliveries = broker.reserve([queue], count, 30.0)
            if not deliveries:
                broker.wait([queue], 0.05)
                continue
            quiet_since = time.monotonic()
            for delivery in deliveries:
                taken.append(delivery.id)
                broker.ack(delivery.id)
    finally:
        broker.close()
    return taken
