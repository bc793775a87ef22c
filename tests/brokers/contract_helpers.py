"""Helpers for the contract suites (a module, so spawned processes can import it)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, cast

import pytest

from flask_tasks.brokers import (
    Broker,
    Delivery,
    Envelope,
    Store,
    Transport,
    open_broker,
    open_transport,
)

LEASE = 30.0  # long enough never to run out during a test, unless a test wants it to
SHORT = 0.3  # a lease, delay or time to live that a test waits out


def open_with_broker(url: str, key_prefix: str) -> Any:
    """Open a transport-and-store (``open_broker``)."""
    return open_broker(url, key_prefix=key_prefix)


def open_plain_transport(url: str, key_prefix: str) -> Any:
    """Open a transport that is no store (``open_transport``: RabbitMQ)."""
    return open_transport(url, key_prefix=key_prefix)


@dataclass
class BackendSpec:
    """How to open (more) connections to the server of one test: same URL, same prefix."""

    kind: str
    url: str
    key_prefix: str
    #: Whether a second connection opened from this spec sees the same data (not memory://).
    shared: bool = True
    #: ``(url, key_prefix) -> connection``; a plain transport or store brings its own.
    opener: Callable[[str, str], Any] = open_with_broker
    opened: list[Any] = field(default_factory=list)

    def open(self) -> Any:
        opened = self.opener(self.url, self.key_prefix)
        self.opened.append(opened)
        return opened

    def open_transport(self) -> Transport:
        return cast(Transport, self.open())

    def open_store(self) -> Store:
        return cast(Store, self.open())

    def open_broker(self) -> Broker:
        return cast(Broker, self.open())

    def close_all(self) -> None:
        for opened in self.opened:
            opened.close()


# -- building and reading messages ---------------------------------------------------------


def env(
    message_id: str,
    queue: str = "q",
    priority: int = 5,
    eta: float | None = None,
    body: bytes | None = None,
) -> Envelope:
    return Envelope(message_id, queue, body or f"body-{message_id}".encode(), priority, eta)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [delivery.id for delivery in deliveries]


def drain(transport: Transport, queues: tuple[str, ...] = ("q",)) -> list[str]:
    return ids(transport.reserve(list(queues), 1000, LEASE))


# -- timing ----------------------------------------------------------------------------------


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


# -- bodies of spawned processes -------------------------------------------------------------


def consume_until_idle(
    opener: Callable[[str, str], Any],
    url: str,
    key_prefix: str,
    queue: str,
    idle: float,
    count: int = 3,
) -> list[str]:
    """Open a transport with ``opener``, reserve-and-ack from ``queue`` until it stays empty
    for ``idle`` seconds, and return the ids taken (the body of a consumer process)."""
    transport: Transport = opener(url, key_prefix)
    taken: list[str] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            deliveries = transport.reserve([queue], count, 30.0)
            if not deliveries:
                transport.wait([queue], 0.05)
                continue
            quiet_since = time.monotonic()
            taken.extend(delivery.id for delivery in deliveries)
            transport.ack(ids(deliveries))
    finally:
        transport.close()
    return taken


def claim_in_process(
    opener: Callable[[str, str], Any], url: str, key_prefix: str, key: str, start_at: float
) -> bool:
    """Open a store with ``opener``, wait until ``start_at`` (Unix time), claim ``key``."""
    store: Store = opener(url, key_prefix)
    try:
        store.ping()
        time.sleep(max(0.0, start_at - time.time()))
        return store.claim(key, 60)
    finally:
        store.close()
