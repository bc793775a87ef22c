"""Enqueue on commit: hold a task's message until a SQLAlchemy session commits.

``task.delay_on_commit(...)`` and ``apply_async(..., on_commit=True)`` build and encode
the message at once (its id is fixed, ``EncodeError`` is raised at the call), and hold it
in the session (``session.info``) until the session's transaction ends:

* committed: everything the transaction holds is published, in one publish per app (and
  retry policy), after the database has committed;
* rolled back, or closed without a commit: it is dropped, and logged;
* a savepoint (``begin_nested``) that is released hands its messages to the enclosing
  transaction; one rolled back drops them. SQLAlchemy fires ``after_commit`` for a
  released savepoint too, so only the end of the outermost transaction publishes.

Outside a transaction (nothing has used the session since its last commit) there is no
uncommitted data to wait for: the message is sent at once, as Django's ``on_commit``
does outside ``atomic``.

The session is the one given (``session=``), else Flask-SQLAlchemy's ``db.session`` of
the current app. SQLAlchemy is optional: it is imported here, when first needed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import states
from .exceptions import ImproperlyConfigured, OperationalError
from .in_transaction import publish_in_transaction
from .message import Message
from .producer import Batch
from .result import EagerResult
from .runtime import Runtime

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, SessionTransaction

logger = logging.getLogger("flask_tasks.on_commit")

#: Where a session keeps what it holds, in ``session.info``.
INFO_KEY = "flask_tasks.on_commit"

INSTALL_HINT = "pip install 'Flask-Tasks[sqlalchemy]' (or Flask-SQLAlchemy)"


def send_messages(
    runtime: Runtime,
    messages: Sequence[Message],
    *,
    retry: bool = True,
    retry_policy: Optional[Mapping[str, Any]] = None,
    on_commit: bool = False,
    session: Any = None,
    connection: Any = None,
) -> None:
    """Publish ``messages`` now, when the session commits (``on_commit``), or inside
    the caller's transaction (``connection``, PostgreSQL)."""
    check_options(on_commit, session, connection)
    if connection is not None:
        publish_in_transaction(runtime, connection, messages)
    elif on_commit:
        send_on_commit(runtime, messages, session=session, retry=retry, retry_policy=retry_policy)
    else:
        runtime.producer.publish(messages, retry=retry, retry_policy=retry_policy)


def check_options(on_commit: bool, session: Any, connection: Any) -> None:
    """``TypeError`` for a combination of the three that means nothing."""
    if on_commit and connection is not None:
        raise TypeError(
            "pass on_commit=True (send when the session commits) or connection= (write in "
            "that connection's transaction, PostgreSQL broker), not both"
        )
    if session is not None and not on_commit:
        raise TypeError("session= names the session to wait for: it goes with on_commit=True")


def eager_on_commit(
    runtime: Runtime,
    run: Callable[[], EagerResult],
    task_id: str,
    session: Any = None,
) -> EagerResult:
    """Eager mode: ``run`` the task when the session commits (at once outside a
    transaction); its outcome fills the returned result then."""
    result = EagerResult(task_id, None, states.PENDING)
    found = resolve_session(runtime, session)
    if not found.in_transaction():
        return run()
    held = Held(runtime, call=lambda: result.fill(run()), label=f"eager run [{task_id}]")
    _pending(found).hold(found, held)
    return result


def send_on_commit(
    runtime: Runtime,
    messages: Sequence[Message],
    *,
    session: Any = None,
    retry: bool = True,
    retry_policy: Optional[Mapping[str, Any]] = None,
) -> None:
    """Publish ``messages`` when the session commits (at once outside a transaction);
    they are encoded now, so ``EncodeError`` is raised here."""
    batch = runtime.producer.encode_batch(messages)
    found = resolve_session(runtime, session)
    if not found.in_transaction():
        runtime.producer.send(batch, retry=retry, retry_policy=retry_policy)
        return
    held = Held(runtime, batch=batch, retry=retry, retry_policy=retry_policy)
    _pending(found).hold(found, held)


def call_on_commit(
    runtime: Runtime, call: Callable[[], object], *, session: Any = None, label: str = ""
) -> None:
    """Call ``call`` when the session commits (at once outside a transaction): a
    workflow's sending, or an eager run."""
    found = resolve_session(runtime, session)
    if not found.in_transaction():
        call()
        return
    _pending(found).hold(found, Held(runtime, call=call, label=label))


def import_sqlalchemy(what: str) -> Any:
    """The ``sqlalchemy.orm`` module; ``ImproperlyConfigured`` naming what to install."""
    try:
        import sqlalchemy.orm
    except ImportError:
        raise ImproperlyConfigured(f"{what} needs SQLAlchemy: {INSTALL_HINT}") from None
    return sqlalchemy.orm


def resolve_session(runtime: Runtime, session: Any = None) -> Session:
    """``session`` (a ``Session`` or ``scoped_session``), else the current app's
    Flask-SQLAlchemy ``db.session``."""
    orm = import_sqlalchemy("on_commit=True")
    if session is None:
        extension = runtime.app.extensions.get("sqlalchemy")
        if extension is None:
            raise ImproperlyConfigured(
                f"on_commit=True needs a SQLAlchemy session: app {runtime.app.name!r} has no "
                "Flask-SQLAlchemy (app.extensions['sqlalchemy']). Pass session= (a SQLAlchemy "
                f"Session), or initialize Flask-SQLAlchemy on the app ({INSTALL_HINT})"
            )
        # Flask-SQLAlchemy 3 keeps the extension itself there, 2.x a state with ``.db``.
        session = getattr(getattr(extension, "db", extension), "session", None)
    if isinstance(session, orm.scoped_session):
        session = session()
    if not isinstance(session, orm.Session):
        raise TypeError(
            f"on_commit=True holds the message in a SQLAlchemy Session; session= got "
            f"{type(session).__name__}"
        )
    found: Session = session
    return found


def _pending(session: Session) -> Pending:
    pending = session.info.get(INFO_KEY)
    if not isinstance(pending, Pending):
        pending = session.info[INFO_KEY] = Pending()
        from sqlalchemy import event

        event.listen(session, "after_commit", pending.after_commit)
        event.listen(session, "after_rollback", pending.after_rollback)
        event.listen(session, "after_transaction_end", pending.after_transaction_end)
    return pending


@dataclass
class Held:
    """Messages (``batch``) or a call held for a commit, by the app that made them."""

    runtime: Runtime
    batch: Optional[Batch] = None
    call: Optional[Callable[[], object]] = None
    retry: bool = True
    retry_policy: Optional[Mapping[str, Any]] = None
    transaction: Optional[SessionTransaction] = None
    label: str = ""

    def key(self) -> tuple[int, bool, tuple[tuple[str, Any], ...]]:
        return (id(self.runtime), self.retry, tuple(sorted((self.retry_policy or {}).items())))

    def describe(self) -> str:
        if self.batch is None:
            return self.label or repr(self.call)
        return ", ".join(f"{m.task}[{m.id}]" for m in self.batch.messages)


@dataclass
class Pending:
    """What one session holds, by the transaction (or savepoint) it was held in."""

    held: list[Held] = field(default_factory=list)
    committed: list[SessionTransaction] = field(default_factory=list)
    rolled_back: list[SessionTransaction] = field(default_factory=list)

    def hold(self, session: Session, held: Held) -> None:
        held.transaction = session.get_nested_transaction() or session.get_transaction()
        self.held.append(held)

    # -- session events ---------------------------------------------------------------

    def after_commit(self, session: Session) -> None:
        # Fired while the transaction that committed is still the innermost one.
        self.committed.append(_innermost(session))

    def after_rollback(self, session: Session) -> None:
        self.rolled_back.append(_innermost(session))

    def after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        committed = _take(self.committed, transaction)
        rolled_back = _take(self.rolled_back, transaction)
        if not transaction.nested and transaction.parent is not None:
            return  # a flush's own subtransaction
        mine = [held for held in self.held if held.transaction is transaction]
        if not mine:
            return
        if transaction.nested and committed:
            for held in mine:  # a released savepoint: its enclosing transaction decides
                held.transaction = transaction.parent
            return
        self.held = [held for held in self.held if held.transaction is not transaction]
        if committed:
            flush(mine)
        else:
            _log_dropped(mine, rolled_back)


def _innermost(session: Session) -> SessionTransaction:
    transaction = session.get_nested_transaction() or session.get_transaction()
    assert transaction is not None
    return transaction


def _take(marks: list[SessionTransaction], transaction: SessionTransaction) -> bool:
    for index, mark in enumerate(marks):
        if mark is transaction:
            del marks[index]
            return True
    return False


def _log_dropped(dropped: Sequence[Held], rolled_back: bool) -> None:
    tasks = "; ".join(held.describe() for held in dropped)
    if rolled_back:
        logger.info("Rolled back: not sending what was held for the commit: %s", tasks)
    else:
        logger.warning(
            "The session was closed without a commit, so what was held for the commit is "
            "dropped: %s. Commit the session (Flask-SQLAlchemy closes it at the end of the "
            "request or app context), or call delay() for a task to send regardless.",
            tasks,
        )


def flush(held: Sequence[Held], ended: str = "The session committed") -> None:
    """Publish the held messages (one publish per app and retry policy), then make the
    held calls; every one is tried, and the first error raised after (an
    ``OperationalError`` names what was not sent, after ``ended``: what made it send)."""
    batches: dict[Any, Held] = {}
    calls = []
    for item in held:
        if item.batch is None:
            calls.append(item)
            continue
        joined = batches.setdefault(item.key(), Held(item.runtime, Batch(), None, item.retry))
        joined.retry_policy = item.retry_policy
        assert joined.batch is not None
        joined.batch.extend(item.batch)
    errors: list[tuple[Held, BaseException]] = []
    for item in [*batches.values(), *calls]:
        try:
            if item.batch is not None:
                item.runtime.producer.send(
                    item.batch, retry=item.retry, retry_policy=item.retry_policy
                )
            elif item.call is not None:
                item.call()
        except Exception as error:
            errors.append((item, error))
    if errors:
        first = errors[0][1]
        if isinstance(first, OperationalError):
            lost = "; ".join(failed.describe() for failed, _error in errors)
            raise OperationalError(
                f"{ended}, but sending what it held failed: {first} (not sent: {lost})"
            ) from first
        raise first
