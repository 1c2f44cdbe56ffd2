"""An httpx2 transport on http.client for the openai SDK.

The SDK keeps its retries, auth and errors; the body is read with the stdlib's chunked decoder, which
costs a third of h11's per streamed chunk.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx2


class _Body(httpx2.SyncByteStream):
    """The response body, chunk by chunk as the socket delivers it."""

    def __init__(self, response: http.client.HTTPResponse, release: Any) -> None:
        self._response = response
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                data = self._response.read1(65536)
                if not data:
                    return
                yield data
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc)) from exc
        except (http.client.HTTPException, OSError) as exc:
            raise httpx2.RemoteProtocolError(f"upstream connection broke: {exc}") from exc

    def close(self) -> None:
        self._release(self._response)


class StdlibTransport(httpx2.BaseTransport):
    """One keep-alive connection per thread and host; a broken or unfinished one is not reused."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._context = ssl.create_default_context()

    def _connection(
        self, scheme: str, host: str, port: int, timeout: dict[str, float | None]
    ) -> http.client.HTTPConnection:
        key = (scheme, host, port)
        pool: dict[Any, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.pop(key, None)
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=timeout.get("connect"), context=self._context)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout.get("connect"))
        conn._sigstream_key = key  # type: ignore[attr-defined]
        return conn

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send the request; hand back a streaming response."""
        timeout = request.extensions.get("timeout", {})
        url = request.url
        conn = self._connection(url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80), timeout)
        try:
            if conn.sock is None:
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
            conn.sock.settimeout(timeout.get("read"))
            target = url.raw_path.decode("ascii")
            body = request.read()
            # identity encoding: the bytes are relayed to the client as they are, never recompressed
            headers = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in request.headers.raw
                if k.lower() != b"accept-encoding"
            ]
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            response = conn.getresponse()
        except TimeoutError as exc:
            conn.close()
            raise (httpx2.ConnectTimeout if conn.sock is None else httpx2.ReadTimeout)(str(exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise httpx2.ConnectError(str(exc)) from exc
        return httpx2.Response(
            response.status,
            headers=response.getheaders(),
            stream=_Body(response, lambda r: self._release(conn, r)),
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _release(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        if response.isclosed() and not response.will_close:
            self._local.__dict__.setdefault("pool", {})[conn._sigstream_key] = conn  # type: ignore[attr-defined]
        else:
            conn.close()  # unread body or server closing: never reuse

    def close(self) -> None:
        """Drop this thread's idle connections."""
        for conn in self._local.__dict__.get("pool", {}).values():
            conn.close()
