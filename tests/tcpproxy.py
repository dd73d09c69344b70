"""A TCP forwarding proxy on loopback that a test can take down and bring back: the database
"goes away" for the server behind it, while the real PostgreSQL other tests use keeps running.

``stop()`` closes the listening socket and every forwarded connection (new connections are
refused); ``start()`` listens again on the same port.  ``freeze()`` keeps every connection
open and accepts new ones but passes nothing on until ``thaw()``: a database that hangs.
``cut_before_commit(marker)`` drops the connection that carried ``marker`` (e.g. a
certificate subject in an INSERT's parameters) at its next ``COMMIT``, before the database
sees it: a failure in the middle of a transaction.  The cut needs the connection unencrypted
(``sslmode=disable``).
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

CHUNK = 65536


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.cut = threading.Event()
        """Set once cut_before_commit has dropped a connection."""
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._flowing = threading.Event()
        self._flowing.set()

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Refuse new connections and close every open one, as a database going away does."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)
        self._flowing.set()  # a frozen pump wakes, finds its sockets closed, and ends

    def freeze(self) -> None:
        """Keep every connection open but pass nothing on: a database that hangs."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def cut_before_commit(self, marker: bytes) -> None:
        self.cut.clear()
        self._marker = marker

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._sockets.update((client, upstream))
            pair = (client, upstream)
            threading.Thread(
                target=self._pump, args=(client, upstream, pair, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, pair, False), daemon=True
            ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        pair: tuple[socket.socket, socket.socket],
        to_database: bool,
    ) -> None:
        marked = False
        try:
            while data := source.recv(CHUNK):
                if to_database and self._marker is not None:
                    marked = marked or self._marker in data
                    if marked and b"COMMIT" in data:
                        self._marker = None
                        self.cut.set()
                        break
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        for sock in pair:
            _close(sock)
        with self._lock:
            self._sockets.difference_update(pair)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
