"""A loopback TCP proxy whose connections can be made to stop forwarding, silently.

:meth:`StallingProxy.stall` stops every connection open at that moment from forwarding,
in both directions, without closing anything: to both ends the peer just stops answering,
as behind a middlebox that dropped the flow. Bytes sent meanwhile wait in the kernel's
buffers and arrive late after :meth:`StallingProxy.resume`. Connections made after a stall
stall too, until :meth:`StallingProxy.resume` (a client that reconnects does not get through:
otherwise, on a loaded machine, a stalled worker reconnects and renews its lease before
anyone can take its task over).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from contextlib import suppress


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.stalled = False

    def close(self) -> None:
        for sock in (self.client, self.server):
            with suppress(OSError):
                sock.close()


class StallingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``; close it when done."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._stalling = False
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def stall(self) -> int:
        """Stop forwarding on every open connection; returns how many were stalled."""
        with self._lock:
            self._stalling = True
            pairs = [pair for pair in self._pairs if not pair.stalled]
            for pair in pairs:
                pair.stalled = True
        return len(pairs)

    def resume(self) -> None:
        """Forward again (what waited arrives now)."""
        with self._lock:
            self._stalling = False
            for pair in self._pairs:
                pair.stalled = False

    def close(self) -> None:
        self._closed.set()
        with suppress(OSError):
            self._listener.close()
        with self._lock:
            for pair in self._pairs:
                pair.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _address = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, server)
            with self._lock:
                pair.stalled = self._stalling
                self._pairs.append(pair)
            for source, target in ((client, server), (server, client)):
                thread = threading.Thread(
                    target=self._pump, args=(pair, source, target), daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _pump(self, pair: _Pair, source: socket.socket, target: socket.socket) -> None:
        while not self._closed.is_set():
            if pair.stalled:
                time.sleep(0.02)
                continue
            try:
                readable, _, _ = select.select([source], [], [], 0.05)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
            except (OSError, ValueError):  # closed by the other pump, or at close()
                break
        pair.close()
