"""One pika connection and channel, used by one thread at a time, reopened with backoff.

pika's ``BlockingConnection`` is not thread-safe: every use goes through
:meth:`Link.using`, which holds the link's lock. It also answers the server's heartbeats
only while a thread is inside it, so :class:`Pump` calls in now and then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..exceptions import ImproperlyConfigured, OperationalError

logger = logging.getLogger("flask_tasks.amqp")

#: Reconnection backoff: the first retry waits this long, doubling up to the maximum.
BACKOFF_START = 0.1
BACKOFF_MAX = 10.0


def import_pika() -> Any:
    """The pika module; ImproperlyConfigured saying how to install it if it is missing."""
    try:
        import pika
    except ImportError:
        raise ImproperlyConfigured(
            "amqp:// needs the pika package: pip install 'Flask-Tasks[amqp]'"
        ) from None
    return pika


def connection_parameters(url: str, **options: Any) -> Any:
    """pika connection parameters for an ``amqp://`` or ``amqps://`` URL.

    The vhost is the path, URL-quoted (``/%2F`` or, as Celery writes it, ``//`` for
    ``/``; none means ``/``). pika's query options (``?heartbeat=30``) apply; ``options``
    (``TASKS_BROKER_OPTIONS``) set pika's parameters by name.
    """
    pika = import_pika()
    parts = urlsplit(url)
    path = parts.path
    if path in ("", "/", "//"):
        path = "/" + quote("/", safe="")
    else:
        path = "/" + quote(unquote(path[1:]), safe="")
    parameters = pika.URLParameters(urlunsplit(parts._replace(path=path)))
    parameters.connection_attempts = 1  # Link retries, with backoff
    if "blocked_connection_timeout" not in parts.query:
        # A publisher blocked by a server alarm (disk, memory) fails instead of hanging.
        parameters.blocked_connection_timeout = 30.0
    for name, value in options.items():
        if not hasattr(parameters, name):
            raise ImproperlyConfigured(
                f"TASKS_BROKER_OPTIONS has {name!r}, which is no pika connection parameter "
                "(see pika.ConnectionParameters)"
            )
        setattr(parameters, name, value)
    return parameters


def describe(error: BaseException) -> str:
    """A pika error as one readable line."""
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"


class Link:
    """A connection and one channel (in confirm mode when ``confirm``), under a lock."""

    def __init__(self, parameters: Any, url: str, *, confirm: bool) -> None:
        self.pika = import_pika()
        self.parameters = parameters
        self.url = url
        self.confirm = confirm
        self.lock = threading.RLock()
        #: Incremented with each new channel: delivery tags of older ones mean nothing.
        self.generation = 0
        #: Queues and exchanges declared on the current connection.
        self.declared: set[str] = set()
        self._connection: Any = None
        self._channel: Any = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        self._closed = False

    @property
    def connection(self) -> Any:
        return self._connection

    def channel(self) -> Any:
        """The open channel, connecting first if needed. Hold :attr:`lock`."""
        if self._closed:
            raise OperationalError(f"The connection to {self.url} was closed")
        channel = self._channel
        if channel is not None and channel.is_open and self._connection.is_open:
            return channel
        self.drop()
        now = time.monotonic()
        if now < self._retry_at:
            raise OperationalError(
                f"RabbitMQ at {self.url} is unreachable ({self._last_error}); "
                f"next attempt in {self._retry_at - now:.1f}s"
            )
        try:
            connection = self.pika.BlockingConnection(self.parameters)
        except (self.pika.exceptions.AMQPError, OSError) as error:
            self._backoff = min(max(self._backoff * 2, BACKOFF_START), BACKOFF_MAX)
            self._retry_at = now + self._backoff
            self._last_error = describe(error)
            raise OperationalError(
                f"Could not connect to RabbitMQ at {self.url}: {self._last_error}"
            ) from error
        try:
            channel = connection.channel()
            if self.confirm:
                channel.confirm_delivery()
        except (self.pika.exceptions.AMQPError, OSError) as error:
            _close_quietly(connection)
            raise OperationalError(f"RabbitMQ at {self.url}: {describe(error)}") from error
        self._backoff = 0.0
        self._connection, self._channel = connection, channel
        self.generation += 1
        return channel

    @contextmanager
    def using(self) -> Iterator[Any]:
        """Hold the lock and yield the channel; pika errors become OperationalError.

        A refused publish (unroutable: a queue deleted behind our back) leaves the
        connection open but forgets what was declared; any other error closes the
        connection (the server then requeues what it delivered on it)."""
        exceptions = self.pika.exceptions
        with self.lock:
            channel = self.channel()
            try:
                yield channel
            except (exceptions.UnroutableError, exceptions.NackError) as error:
                self.declared.clear()
                raise OperationalError(
                    f"RabbitMQ at {self.url} did not take a message ({describe(error)}); "
                    "publish it again"
                ) from error
            except exceptions.ChannelClosedByBroker as error:
                self.drop()
                raise OperationalError(_channel_closed(self.url, error)) from error
            except (exceptions.AMQPError, OSError) as error:
                self.drop()
                raise OperationalError(f"RabbitMQ at {self.url}: {describe(error)}") from error

    def pump(self) -> None:
        """Answer heartbeats and take in pending frames, unless another thread is using
        the link (it does the same)."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            connection = self._connection
            if connection is not None and connection.is_open:
                connection.process_data_events(0)
        except (self.pika.exceptions.AMQPError, OSError):
            self.drop()  # the next use reconnects
        finally:
            self.lock.release()

    def probe(self, queue: str, *, purge: bool) -> int:
        """Ready messages in the RabbitMQ queue ``queue`` (0 if there is no such queue),
        dropping them when ``purge``; on a channel of its own, as a missing queue closes
        the channel that asks."""
        with self.using():
            probe = self.connection.channel()
            try:
                count = int(probe.queue_declare(queue, passive=True).method.message_count)
                if purge:
                    count = int(probe.queue_purge(queue).method.message_count)
            except self.pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code == 404:
                    return 0
                raise
            finally:
                if probe.is_open:
                    probe.close()
        return count

    def drop(self) -> None:
        """Forget the connection (closing it if it is still open)."""
        connection, self._connection, self._channel = self._connection, None, None
        self.declared.clear()
        if connection is not None:
            _close_quietly(connection)

    def close(self) -> None:
        with self.lock:
            self._closed = True
            self.drop()


def _channel_closed(url: str, error: Any) -> str:
    code = getattr(error, "reply_code", None)
    text = getattr(error, "reply_text", str(error))
    if code == 406:
        return (
            f"RabbitMQ at {url} refused: {text}. A queue or exchange of that name exists "
            "with other settings (made by another program or version): delete it, or set "
            "another TASKS_KEY_PREFIX"
        )
    if code == 403:
        return (
            f"RabbitMQ at {url} refused: {text}. Grant the user configure, write and read "
            "permissions on the vhost"
        )
    return f"RabbitMQ at {url} closed the channel: {text}"


def _close_quietly(connection: Any) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception as error:  # already broken: nothing left to close
        logger.debug("closing a broken connection: %s", describe(error))


class Pump:
    """A daemon thread that calls ``tick`` every ``interval`` seconds until stopped."""

    def __init__(self, tick: Callable[[], None], interval: float, name: str) -> None:
        self._tick = tick
        self._interval = interval
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._name = name
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start the thread unless it runs."""
        with self._start_lock:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._tick()
            except Exception as error:  # never let the pump die: the next tick tries again
                logger.debug("%s: %s", self._name, describe(error))

    def stop(self) -> None:
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._interval + 5)
