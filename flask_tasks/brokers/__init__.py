"""Transports and stores, chosen by URL: redis, sqlite, postgresql, memory, and amqp (a
transport only).

:func:`check_url` validates a URL's scheme (``init_app`` calls it, so a typo fails at
start); :class:`Connections` opens an app's transport and store lazily, once per process.
"""

from __future__ import annotations

from ..exceptions import ReadOnlyBroker
from .base import (
    Broker,
    DeadLetter,
    Delivery,
    Envelope,
    Held,
    QueueCounts,
    Settlement,
    Store,
    Transport,
    hide_password,
    lease_of,
)
from .connections import Connections
from .urls import check_url, check_urls, open_broker, open_transport

__all__ = [
    "Broker",
    "Connections",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "Held",
    "QueueCounts",
    "ReadOnlyBroker",
    "Settlement",
    "Store",
    "Transport",
    "check_url",
    "check_urls",
    "hide_password",
    "lease_of",
    "open_broker",
    "open_transport",
]
