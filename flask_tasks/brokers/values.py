"""What the storage interfaces move and answer: envelopes, deliveries, dead letters, queue
counts, and the checks every implementation makes on them (see :mod:`.base`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

#: Priorities run from 0 (highest) to 9 (lowest), as in the public task API.
MIN_PRIORITY = 0
MAX_PRIORITY = 9


def hide_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs and error messages.

    Works on URLs urllib cannot split, such as Sentinel's ``host1:26379,host2:26379``.
    """
    return _PASSWORD.sub(r"\1***@", url)


_PASSWORD = re.compile(r"^([a-z0-9+.-]+://[^:/@]*:)[^/]*@", re.IGNORECASE)


@dataclass(frozen=True)
class Envelope:
    """A message to publish: where it goes and its encoded body."""

    id: str
    queue: str
    body: bytes
    priority: int = 5
    #: Unix time before which the message must not be delivered (None: ready now).
    eta: Optional[float] = None
    #: True when the producer made ``id`` for this message and publishes it for the first
    #: time: no message, record or listener can have it yet, so a transport may skip the
    #: checks it makes for an id already stored (Redis does).
    fresh: bool = False


def check_envelope(envelope: Envelope) -> None:
    """Raise ValueError for a priority outside 0..9 or an empty queue name; transports
    call it for every envelope before storing any."""
    if not MIN_PRIORITY <= envelope.priority <= MAX_PRIORITY:
        raise ValueError(
            f"Message {envelope.id!r} has priority {envelope.priority!r}; "
            f"priorities run from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    if not envelope.queue:
        raise ValueError(f"Message {envelope.id!r} names no queue")


@dataclass(frozen=True)
class Delivery:
    """A reserved message, held under a lease until acked, released or dead-lettered.

    ``deliveries`` and ``token`` do not take part in comparisons: two deliveries of the
    same message compare equal.
    """

    id: str
    queue: str
    priority: int
    body: bytes
    #: The id was marked revoked when the message was reserved. Only a :class:`Broker`
    #: (which is its own store) can tell; a plain transport always says False, and the
    #: worker asks the store instead.
    revoked: bool = False
    #: Reservations of this message since it was published, this one included, less
    #: those that ended in a ``release``: above 1, earlier leases ran out unsettled (the
    #: process running it died, or stalled). Workers dead-letter a message delivered more
    #: than ``TASKS_MAX_DELIVERIES`` times. A transport that cannot count says 1.
    deliveries: int = field(default=1, compare=False)
    #: Identifies this lease (see *fencing* above); "" where the transport cannot fence.
    token: str = field(default="", compare=False)


#: A held message as the settling methods take it: the :class:`Delivery` (fenced by its
#: token) or its bare id (unconditional).
Held = Union[str, Delivery]


def lease_of(held: Held) -> tuple[str, str]:
    """``(message id, lease token)`` of a :data:`Held`; the token is "" for a bare id."""
    if isinstance(held, Delivery):
        return held.id, held.token
    return held, ""


@dataclass(frozen=True)
class DeadLetter:
    """A message the workers could not process, kept with the reason."""

    id: str
    queue: str
    priority: int
    body: bytes
    reason: str
    #: Unix time it was dead-lettered.
    failed_at: float


def check_id_list(ids: Sequence[Held]) -> None:
    """Raise TypeError for a bare ``str`` where a sequence of ids is expected: it is a
    ``Sequence[str]`` too, so type checkers let ``ack("id")`` through, which would ack
    one id per character."""
    if isinstance(ids, str):
        raise TypeError(f"Expected a sequence of ids, got the str {ids!r}; pass [{ids!r}]")


@dataclass(frozen=True)
class QueueCounts:
    """How many messages of one queue are ready, delayed (an eta in the future, or a
    retry's countdown) and reserved (leased to a worker). None: the transport cannot tell."""

    ready: int
    delayed: Optional[int] = None
    reserved: Optional[int] = None


#: A finished message (its :class:`Delivery`, or bare id) and the result record to store
#: with it (None: no record).
Settlement = tuple[Held, Optional[bytes]]
