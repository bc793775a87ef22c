"""``Connections``: one app's transport and store, opened lazily and once per process.

Decides once whether the store is the transport's own server (no ``TASKS_RESULT_BACKEND``,
or the same URL): then :attr:`Connections.broker` is that server, and the producer and the
worker use its joint steps (a queue change and result records in one round trip). When
the store is another database of the same Redis server, the transport's joint steps
write the records there (:attr:`Connections.joint`). A transport that is no store
(RabbitMQ) always has a store of its own, and no joint steps.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional

from ..exceptions import ImproperlyConfigured
from .base import Broker, Store, Transport, hide_password
from .redis_connection import records_database
from .urls import open_broker, open_transport


class Connections:
    """The transport (``broker_url``) and store (``backend_url`` or the broker) of one app."""

    def __init__(
        self,
        broker_url: str,
        backend_url: Optional[str] = None,
        *,
        key_prefix: str = "flask_tasks",
        options: Optional[dict[str, Any]] = None,
        publish_timeout: Optional[float] = None,
    ) -> None:
        self.broker_url = broker_url
        self.backend_url = backend_url if backend_url and backend_url != broker_url else None
        self.key_prefix = key_prefix
        self.options = dict(options or {})
        #: The store's database when it is another database of the transport's Redis.
        self.records_db = (
            records_database(broker_url, self.backend_url) if self.backend_url else None
        )
        if self.records_db is not None:
            self.options["records_db"] = self.records_db
        self.publish_timeout = publish_timeout
        self._pid = os.getpid()
        self._transport: Optional[Transport] = None
        self._store: Optional[Broker] = None
        #: Threads that need a connection at once open it once (not one each, leaking).
        self._opening = threading.Lock()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # never share sockets or files with a parent process
            self._pid = os.getpid()
            self._opening = threading.Lock()  # a lock held in the parent stays held here
            # Those that survive a fork open connections of their own: a worker child
            # uses (and shares the memory of) what its parent opened before the fork.
            if self._transport is not None and not self._transport.survives_fork:
                self._transport = None
            if self._store is not None and not self._store.survives_fork:
                self._store = None
            for kept in {id(c): c for c in (self._transport, self._store) if c}.values():
                kept.after_fork()

    @property
    def transport(self) -> Transport:
        """Where messages travel (``TASKS_BROKER_URL``)."""
        return self._opened_transport()

    def _opened_transport(self) -> Transport:
        self._check_fork()
        if self._transport is None:
            with self._opening:
                if self._transport is None:
                    opened = open_transport(
                        self.broker_url, key_prefix=self.key_prefix, **self.options
                    )
                    opened.publish_timeout = self.publish_timeout
                    self._transport = opened
        return self._transport

    @property
    def store(self) -> Store:
        """Where records live: the broker's own store unless ``TASKS_RESULT_BACKEND``
        names another."""
        if self.backend_url is None:
            transport = self._opened_transport()
            if not isinstance(transport, Store):
                raise ImproperlyConfigured(
                    f"{hide_password(self.broker_url)} carries messages but keeps no "
                    "results: set TASKS_RESULT_BACKEND to a store (redis://, sqlite:///)"
                )
            return transport
        self._check_fork()
        if self._store is None:
            with self._opening:
                if self._store is None:
                    store = open_broker(self.backend_url, key_prefix=self.key_prefix)
                    store.publish_timeout = self.publish_timeout
                    self._store = store
        return self._store

    @property
    def broker(self) -> Optional[Broker]:
        """The transport when it is also the store (joint steps available), else None."""
        transport = self.transport
        if self.backend_url is None and isinstance(transport, Broker):
            return transport
        return None

    @property
    def joint(self) -> Optional[Broker]:
        """The broker whose ``publish_with_records`` and ``ack_with_records`` write the
        store's records too: :attr:`broker`, or the Redis transport when the store is
        another database of its server; None when records go to the store separately."""
        transport = self.transport
        if isinstance(transport, Broker) and (
            self.backend_url is None or self.records_db is not None
        ):
            return transport
        return None

    def prepare_fork(self) -> None:
        """Before forking children that use these connections: open them, so that the
        children share what survives a fork (:attr:`Transport.survives_fork`), with
        its sockets closed; close the others (each child opens its own)."""
        transport = self.transport
        if transport.survives_fork:
            transport.disconnect()
        else:
            transport.close()
            self._transport = None
        store = self.store if self.backend_url is not None else None
        if store is not None and store.survives_fork:
            store.disconnect()
        elif store is not None:
            store.close()
            self._store = None

    def close(self) -> None:
        """Close what is open; the next use opens again."""
        for opened in {id(c): c for c in (self._transport, self._store) if c}.values():
            opened.close()
        self._transport = self._store = None
