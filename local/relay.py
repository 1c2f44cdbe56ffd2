"""A byte relay: accept on one socket address, pipe each connection to another (TCP or a Unix socket).

`make dev` uses it to let `sam local invoke` containers reach moto server and the embedded upstream:
they listen on loopback only, and a container on Docker's bridge reaches this machine at the bridge's
address (docker0), not at 127.0.0.1. tests/rie uses it to connect a private network namespace to the
machine the way Docker does (a published port in, the bridge address out). Stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable

# ("tcp", host, port) or ("unix", path)
Address = tuple[str, str, int] | tuple[str, str]


def _socket(address: Address) -> socket.socket:
    family = socket.AF_UNIX if address[0] == "unix" else socket.AF_INET
    return socket.socket(family, socket.SOCK_STREAM)


def _target(address: Address) -> str | tuple[str, int]:
    return address[1] if address[0] == "unix" else (address[1], int(address[2]))  # type: ignore[misc]


def describe(address: Address) -> str:
    """host:port or the socket's path, for messages."""
    return str(address[1]) if address[0] == "unix" else f"{address[1]}:{address[2]}"  # type: ignore[misc]


class Relay:
    """Listens on `listen`; every connection is piped, both ways, to a new connection to `target`."""

    def __init__(self, listen: Address, target: Address) -> None:
        self.listen, self.target = listen, target
        self._server = _socket(listen)
        if listen[0] == "tcp":
            self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        elif os.path.exists(listen[1]):
            os.unlink(listen[1])
        self._server.bind(_target(listen))  # OSError (address in use) goes to the caller
        self._server.listen(64)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=f"relay {describe(listen)}", daemon=True)

    def start(self) -> Relay:
        """Start accepting; returns self."""
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        upstream = _socket(self.target)
        try:
            upstream.connect(_target(self.target))
        except OSError:  # nothing there: the client sees its connection closed, as with no listener
            client.close()
            upstream.close()
            return
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._open.update((client, upstream))
        remaining = [2]

        def finished() -> None:  # the second direction to end closes the pair
            with self._lock:
                remaining[0] -= 1
                last = remaining[0] == 0
                if last:
                    self._open.difference_update((client, upstream))
            if last:
                client.close()
                upstream.close()

        threading.Thread(target=self._pipe, args=(upstream, client, finished), daemon=True).start()
        self._pipe(client, upstream, finished)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, finished: Callable[[], None]) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)  # half-close: the other direction may still be talking
        except OSError:  # a reset on either side ends both directions
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        finally:
            finished()

    def stop(self) -> None:
        """Stop accepting and cut every open connection (quickly: make dev stops within two seconds)."""
        with self._lock:
            self._closed = True
            open_socks, self._open = list(self._open), set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        for sock in open_socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self.listen[0] == "unix":
            with contextlib.suppress(OSError):
                os.unlink(self.listen[1])
