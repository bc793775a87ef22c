"""Wake-ups across processes for the SQLite broker: one datagram socket per watcher.

A process whose watcher thread runs (some thread of it waits in ``wait()`` or
``watch_result()``) binds a Unix datagram socket in a directory shared by everyone using
the database file: ``<file>-wake/`` beside it, or, when that path is too long for a socket
address, a directory in the temporary directory named after a digest of the file's path.
After a commit that changed anything, the committing process sends one empty datagram to
every other socket there. A datagram carries no data and is only a hint to read
``PRAGMA data_version`` now: a lost one (a full receive buffer, a directory the sender may
not write to, a system without Unix sockets) costs latency, never a wake-up, because the
watcher still reads it every ``poll_interval``.

The sender keeps the directory's listing and reads it again when the directory's
modification time changes. That time has the kernel clock's granularity (a few
milliseconds), so a listing made within :data:`_SETTLE` seconds of a change is not trusted
and is read again at the next commit. The socket of a process that died (``kill -9``)
refuses datagrams; the sender removes its file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import tempfile
import threading
import time
from typing import Optional

#: Longest socket path used (Linux allows 107 bytes, macOS 103).
_MAX_PATH = 100
#: Seconds after a change of the directory during which its listing is read at every commit.
_SETTLE = 0.25
#: Errors of ``sendto`` that mean nobody listens on that socket any more.
_GONE = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)

#: The names of the sockets in the directory: ``<pid>-<random>``; anything else is ignored.
_NAME = re.compile(r"[0-9]+-[0-9a-f]{12}\Z")

#: Whether this system has Unix datagram sockets (not Windows).
SUPPORTED = hasattr(socket, "AF_UNIX")


def wake_directory(db_path: str) -> str:
    """The directory of the wake-up sockets of the database at ``db_path`` (the same for
    every path to the file, symbolic links resolved)."""
    db_path = os.path.realpath(db_path)
    beside = db_path + "-wake"
    if len(os.fsencode(os.path.join(beside, "0" * 24))) <= _MAX_PATH:
        return beside
    digest = hashlib.sha256(os.fsencode(db_path)).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"flask-tasks-wake-{digest}")


class WakeListener:
    """The socket on which one watcher thread receives wake-ups."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"{os.getpid()}-{secrets.token_hex(6)}")
        self._pid = os.getpid()
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.bind(self.path)
        except BaseException:
            self._socket.close()
            raise

    def wait(self, timeout: float) -> bool:
        """Block until a wake-up arrives or ``timeout`` seconds pass; True if one came.
        Every wake-up already queued is consumed."""
        self._socket.settimeout(max(0.0, timeout))
        try:
            self._socket.recv(1)
        except (socket.timeout, BlockingIOError):
            return False
        # Not recv(MSG_DONTWAIT): on a socket with a timeout, Python waits out the timeout.
        self._socket.setblocking(False)
        try:
            while True:
                self._socket.recv(1)
        except OSError:  # BlockingIOError: nothing more queued
            pass
        return True

    def interrupt(self) -> None:
        """Wake the thread blocked in :meth:`wait` (from another thread)."""
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sender.setblocking(False)
            sender.sendto(b"", self.path)
        except OSError:
            pass
        finally:
            sender.close()

    def close(self) -> None:
        """Close the socket; remove its file unless this is a forked child's copy."""
        self._socket.close()
        if os.getpid() == self._pid:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


class WakeSender:
    """Sends a wake-up to every listener of one database but ``own``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._socket: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._stamp: Optional[int] = None
        self._peers: tuple[str, ...] = ()

    def _listing(self) -> tuple[str, ...]:
        try:
            stamp = os.stat(self.directory).st_mtime_ns
        except OSError:  # nobody listens yet
            return ()
        if stamp != self._stamp:
            try:
                names = os.listdir(self.directory)
            except OSError:
                return ()
            self._peers = tuple(
                os.path.join(self.directory, name) for name in names if _NAME.match(name)
            )
            settled = time.time_ns() - stamp > _SETTLE * 1e9
            self._stamp = stamp if settled else None
        return self._peers

    def send(self, own: Optional[str] = None) -> None:
        """Wake every listener but ``own`` (never raises: a lost wake-up only delays)."""
        peers = self._listing()
        if not peers or peers == (own,):
            return
        sock = self._socket or self._open()
        if sock is None:
            return
        for path in peers:
            if path == own:
                continue
            try:
                sock.sendto(b"", path)
            except OSError as exc:
                if exc.errno in _GONE:
                    self._forget(path)
                # EAGAIN: its queue is full, so it has wake-ups waiting already;
                # EACCES and the like: it polls, as without wake-ups.

    def _open(self) -> Optional[socket.socket]:
        with self._lock:  # one socket, whichever thread commits first
            if self._socket is None:
                try:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                except OSError:  # out of file descriptors, say
                    return None
                self._socket.setblocking(False)
            return self._socket

    def _forget(self, path: str) -> None:
        try:
            if socket_is_dead(path):
                os.unlink(path)
        except OSError:
            pass
        self._stamp = None

    def close(self) -> None:
        """Close the sending socket (a later :meth:`send` opens another)."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def socket_is_dead(path: str) -> bool:
    """True if ``path`` is a socket file that no process listens on."""
    if not stat.S_ISSOCK(os.stat(path).st_mode):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except OSError as exc:
        return exc.errno == errno.ECONNREFUSED
    finally:
        probe.close()
    return False
