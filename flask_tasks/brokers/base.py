"""The two storage interfaces: a *transport* moves messages, a *store* keeps what outlives them.

Both move bytes and ids. Neither imports user code nor knows the serializer: the core
hands them encoded message bodies and encoded result records, and gets them back.

:class:`Transport`
    Queues: publish, reserve under a lease, extend, ack, release, dead-letter, purge,
    depth. RabbitMQ is a transport only.
:class:`Store`
    Result records with change notification, revocations, atomic counters (rate limits,
    chords), schedule claims and worker heartbeats.
:class:`Broker`
    A server that is both (Redis, SQLite, memory, PostgreSQL). It adds the joint steps
    that change a queue and write result records atomically and in one round trip: the
    core uses them whenever the app's transport and store are the same object.

Every transport passes ``tests/brokers/test_transport_contract.py`` and every store
``tests/brokers/test_store_contract.py``. Every method that changes more than one thing
does so atomically: a crash leaves either the state before or the state after.

Vocabulary
----------
queue
    A named FIFO of ready messages, split by priority 0 (first) to 9 (last).
delayed
    A message published with an ``eta`` in the future waits outside every queue and is
    moved to its queue once due (by ``reserve``, which promotes due messages first).
lease
    A reserved message is held by one consumer until it is acked, released or
    dead-lettered. If its lease runs out first (the consumer died), the next ``reserve``
    by anyone puts it back at the front of its queue. Live consumers renew leases with
    ``extend``. Due times and lease deadlines are judged by the server's clock where
    there is a server (Redis ``TIME``), so a consumer with a wrong clock changes nothing.
fencing
    Each reservation gets a fresh :attr:`Delivery.token`. ``ack``, ``release`` and
    ``extend`` given the :class:`Delivery` itself (not its bare id) are refused once the
    message was reserved again, or settled, by someone else: a consumer that lost its
    lease (paused, partitioned) cannot overwrite the outcome of the one that took over.
    Given a bare id they act unconditionally, as before.
result record
    Opaque bytes stored under a task id with a time to live. Every write notifies
    watchers so that ``watch_result`` wakes at once.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Optional

from .values import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    DeadLetter,
    Delivery,
    Envelope,
    Held,
    QueueCounts,
    Settlement,
    check_envelope,
    check_id_list,
    hide_password,
    lease_of,
)


class _Connection(ABC):
    #: The URL this was opened with, password hidden. Safe to print.
    url: str

    #: Short human name for banners ("redis", "sqlite", "memory").
    kind: str

    #: Seconds one publish may wait on the server (a lock, a reply) before failing with
    #: OperationalError; None: the implementation's default. Set from
    #: ``TASKS_PUBLISH_TIMEOUT`` by ``Connections``, so that a web request publishing a
    #: task never hangs for minutes. Honoured where the server allows.
    publish_timeout: Optional[float] = None

    @abstractmethod
    def ping(self) -> None:
        """Raise OperationalError unless the server answers."""

    #: True when a forked child may use this object (it opens connections of its own).
    survives_fork = False

    def close(self) -> None:
        """Release connections and files. The object may not be used afterwards."""

    def disconnect(self) -> None:
        """Before a fork, where :attr:`survives_fork`: close connections, staying usable."""

    def after_fork(self) -> None:
        """In a forked child, before its first use, where :attr:`survives_fork`."""

    @staticmethod
    def now() -> float:
        """Current Unix time; the single clock every implementation uses."""
        return time.time()

    def server_time(self) -> Optional[float]:
        """Unix time by the server's clock (one round trip), to judge times other processes
        set; None where it has none apart from this host's (SQLite, memory) or unasked."""
        return None

    def consuming(self, active: bool) -> None:
        """A worker's consumer in this process starts (True) or stops using this."""


class Transport(_Connection):
    """Queues of messages for one app, with leases.

    Implementations are safe to share between threads of one process, and are never
    shared across ``fork()`` unless :attr:`survives_fork`: each process opens its own
    connections. Methods raise
    :class:`flask_tasks.exceptions.OperationalError` when the server cannot be reached,
    with the URL (password hidden) in the message.
    """

    #: True when ``wait`` returns at once for work made ready since this thread's last
    #: ``reserve``: a consumer whose reserve came back short then waits before reserving
    #: again (one call fewer per idle spell), instead of reserving to find nothing.
    wait_sees_earlier_work = False

    #: False where a message whose consumer died (its connection closed) comes back
    #: uncounted in :attr:`Delivery.deliveries` (RabbitMQ): workers then count the
    #: deliveries of each message in the result store, so that a message that kills its
    #: process is still dead-lettered after ``TASKS_MAX_DELIVERIES``.
    counts_lost_deliveries = True

    @abstractmethod
    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Store ``envelopes`` in one atomic step (all or none).

        A message with an ``eta`` in the future is delayed; any other goes to the back of
        its queue at its priority. Publishing an id that is already stored replaces the
        stored message (its body, queue and timing). Wakes consumers waiting on the queue.
        """

    @abstractmethod
    def reserve(self, queues: Sequence[str], count: int, lease: float) -> list[Delivery]:
        """Take up to ``count`` ready messages and lease them for ``lease`` seconds.

        First moves due delayed messages to their queues and messages whose lease ran
        out back to the front of theirs (a bounded batch each call, never the whole
        store). Then takes messages from ``queues`` in the order given (the first queue
        has precedence), within a queue by priority (0 first), then oldest first.
        Never hands the same message to two consumers while its lease runs.
        """

    @abstractmethod
    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block for up to ``timeout`` seconds, returning early when work may be ready in
        ``queues`` (a publish, a delayed message due) or for no reason. Never busy-polls."""

    @abstractmethod
    def extend(self, ids: Iterable[Held], lease: float) -> None:
        """Renew the leases of held messages to ``lease`` seconds from now. Messages no longer
        held (or, given as deliveries, held under another lease) are ignored."""

    @abstractmethod
    def ack(self, message_ids: Sequence[Held]) -> list[str]:
        """Forget delivered messages, in as few round trips as the server allows.

        Returns the ids refused by fencing (deliveries whose lease was taken over or
        settled by someone else; nothing changed for them), [] when none was.
        Raises TypeError for a bare ``str`` (``ack([message_id])`` acks one message)."""

    @abstractmethod
    def release(
        self, message_id: Held, body: bytes | None = None, eta: float | None = None
    ) -> bool:
        """Return a held message for delivery again, with an optional new ``body``.

        Without ``eta`` it goes to the front of its queue (a warm shutdown returning
        prefetched work); with ``eta`` it is delayed until then (a retry). Releasing a
        message the transport no longer holds (acked, or never delivered) is a no-op:
        publish it again instead. Returns False when fencing refused it (a
        :class:`Delivery` whose lease was lost), else True."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Drop the lease of ``delivery`` and keep it in the dead-letter store with
        ``reason``. Never raises for bad content: the body is stored as is."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""

    @abstractmethod
    def retry_dead_letter(self, message_id: str) -> bool:
        """Move a dead letter back to the back of its queue. False if there is none."""

    def held(self, message_ids: Sequence[str]) -> Optional[set[str]]:
        """Those of ``message_ids`` leased and not settled (running or prefetched); None where
        the transport cannot tell. Revocation tells a task not started from one running."""
        return None

    @abstractmethod
    def delete_dead_letter(self, message_id: str) -> bool:
        """Drop a dead letter for good. False if there is none."""

    @abstractmethod
    def queue_length(self, queue: str) -> int:
        """Number of ready messages in ``queue`` (not delayed, not leased)."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Drop the ready messages of ``queue``; returns how many."""

    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Ready, delayed and reserved counts of each of ``queues`` (``flask tasks status``):
        may take time proportional to the delayed and reserved. By default only ``ready``."""
        return {queue: QueueCounts(self.queue_length(queue)) for queue in queues}


class Store(_Connection):
    """What outlives a message: records, revocations, counters, claims, heartbeats. Like
    :class:`Transport`: thread-safe, shared across ``fork()`` only where ``survives_fork``."""

    # -- result records -------------------------------------------------------------------

    @abstractmethod
    def set_result(self, task_id: str, record: bytes, ttl: float) -> None:
        """Store a result record for ``ttl`` seconds (0 = forever) and notify watchers."""

    def set_results(self, records: Mapping[str, bytes], ttl: float) -> None:
        """Several records (task id -> record), in as few round trips as the server allows."""
        for task_id, record in records.items():
            self.set_result(task_id, record, ttl)

    @abstractmethod
    def get_result(self, task_id: str) -> bytes | None:
        """The stored result record, or None if there is none (never sent, forgotten or
        expired)."""

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """Several records in one call, in the order of ``task_ids``."""
        return [self.get_result(task_id) for task_id in task_ids]

    @abstractmethod
    def forget_result(self, task_id: str) -> None:
        """Delete the result record."""

    @abstractmethod
    def watch_result(self, task_id: str, last: bytes | None, timeout: float) -> bytes | None:
        """Return the current record as soon as it differs from ``last`` (at once if it
        already does), or after ``timeout`` seconds whatever it is. Woken by writes,
        not by polling on a fixed interval."""

    # -- fencing of records (a result store apart from the transport) ----------------------

    #: True where :meth:`fence` and :meth:`set_results_fenced` fence; elsewhere records
    #: are written unconditionally. Needed only when the store is not the transport's own
    #: server: a :class:`Broker` fences its joint steps itself.
    fences_records = False

    def fence(self, task_id: str, token: str, ttl: float) -> None:
        """Mark the lease ``token`` as the one now running the message ``task_id`` (a
        worker took it over after another's lease ran out): for ``ttl`` seconds (0 =
        forever) :meth:`set_results_fenced` refuses records of ``task_id`` given another
        token. Does nothing where :attr:`fences_records` is False."""

    def set_results_fenced(self, records: Mapping[str, tuple[bytes, str]], ttl: float) -> list[str]:
        """:meth:`set_results` of task id -> ``(record, lease token)``, refusing (not
        writing) each record whose task id is fenced with another token; returns the
        refused ids. A record given the token "" is written unconditionally and clears
        the fence of its id (a new message under that id: publishers write its PENDING
        record so); where :attr:`fences_records` is False, every record is written."""
        self.set_results({task_id: record for task_id, (record, _t) in records.items()}, ttl)
        return []

    # -- revocation -----------------------------------------------------------------------

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], ttl: float, terminate: bool = False) -> None:
        """Mark tasks revoked for ``ttl`` seconds: workers skip them. With ``terminate``,
        workers running one of them also stop it."""

    @abstractmethod
    def revoked(self, task_ids: Sequence[str]) -> set[str]:
        """Those of ``task_ids`` that are marked revoked (with or without terminate)."""

    @abstractmethod
    def terminating(self, task_ids: Sequence[str]) -> set[str]:
        """Those of ``task_ids`` revoked with ``terminate=True``."""

    # -- counters, claims, heartbeats -----------------------------------------------------

    @abstractmethod
    def incr(self, key: str, ttl: float) -> int:
        """Atomically add one to the counter ``key`` (created at 0, expiring ``ttl``
        seconds after this call) and return the new value."""

    @abstractmethod
    def claim(self, key: str, ttl: float) -> bool:
        """True for the first caller to claim ``key`` within ``ttl`` seconds, False for
        every other (any process, any host): a due schedule entry is sent once."""

    @abstractmethod
    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        """Record that ``worker`` is alive, with ``info``, for ``ttl`` seconds."""

    @abstractmethod
    def workers(self) -> dict[str, bytes]:
        """Workers whose last heartbeat has not expired: name -> info."""

    # -- shared settings ------------------------------------------------------------------

    def set_value(self, namespace: str, key: str, value: bytes | None) -> None:
        """Set ``key`` in ``namespace`` to ``value`` (None deletes it), kept until changed:
        settings that running workers read, such as ``flask tasks rate-limit``."""
        raise NotImplementedError(
            f"{type(self).__name__} does not keep shared values (Store.set_value); "
            "use a Redis, SQLite or memory store for this"
        )

    def get_values(self, namespace: str) -> dict[str, bytes]:
        """Every key of ``namespace`` and its value, in one read."""
        raise NotImplementedError(
            f"{type(self).__name__} does not keep shared values (Store.get_values); "
            "use a Redis, SQLite or memory store for this"
        )


class Broker(Transport, Store):
    """A server that is both transport and store, with the joint steps: a queue change and
    result records written in one atomic step and one round trip (``publish``, ``ack`` and
    ``release`` are the joint steps without records)."""

    @abstractmethod
    def publish_with_records(
        self, envelopes: Sequence[Envelope], records: Mapping[str, bytes], record_ttl: float
    ) -> None:
        """:meth:`publish` and, in the same atomic step, store ``records``
        (task id -> record; PENDING at publish time)."""

    @abstractmethod
    def ack_with_records(self, settlements: Sequence[Settlement], record_ttl: float) -> list[str]:
        """Ack each ``(message, record)`` and store its record (when not None) in the
        same atomic step, each on its own, in as few round trips as the server allows.
        Workers use it to settle the outcomes of finished tasks. A settlement refused by
        fencing stores nothing; returns the ids refused, as :meth:`Transport.ack`."""

    @abstractmethod
    def release_with_record(
        self,
        message_id: Held,
        body: bytes | None,
        eta: float | None,
        record: bytes | None,
        record_ttl: float,
    ) -> bool:
        """:meth:`release`, atomically with storing ``record`` (a retry's RETRY record);
        False, with nothing stored, when fencing refused it."""

    def ack_and_reserve(
        self,
        settlements: Sequence[Settlement],
        record_ttl: float,
        queues: Sequence[str],
        count: int,
        lease: float,
    ) -> tuple[list[str], list[Delivery]]:
        """(refused, taken): :meth:`ack_with_records` then :meth:`reserve`, in one step where
        that is cheaper (SQLite: one transaction). A worker settles a batch, takes the next."""
        refused = self.ack_with_records(settlements, record_ttl) if settlements else []
        return refused, self.reserve(queues, count, lease)

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        self.publish_with_records(envelopes, {}, 0)

    def ack(self, message_ids: Sequence[Held]) -> list[str]:
        check_id_list(message_ids)
        return self.ack_with_records([(message_id, None) for message_id in message_ids], 0)

    def release(
        self, message_id: Held, body: bytes | None = None, eta: float | None = None
    ) -> bool:
        return self.release_with_record(message_id, body, eta, None, 0)


__all__ = [
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Broker",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "Held",
    "QueueCounts",
    "Settlement",
    "Store",
    "Transport",
    "check_envelope",
    "check_id_list",
    "hide_password",
    "lease_of",
]
