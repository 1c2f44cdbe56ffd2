"""One HTTP/1.1 request and its whole answer over a kept-alive socket: the AWS client's transport.

`http.client` writes a request in pieces and parses every answer's headers with the email package: for the AWS
client's small signed JSON calls that was more than half of a call's CPU (docs/adr/0010-aws-http-exchange.md).
This writes the request in one `sendall` and reads the status line, the headers and a Content-Length, chunked
or close-delimited body, skipping 1xx interim answers. It is not a general client: no redirects, no
decompression (it asks for `identity`), no proxies, one request at a time.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024  # DynamoDB's largest answers (BatchGetItem) are 16 MB
# All bytes of one answer as sent (interim answers, chunk lines, trailers): endless framing is cut off too.
MAX_WIRE_BYTES = MAX_BODY_BYTES + 2 * MAX_HEAD_BYTES
MAX_INTERIM = 16  # 1xx answers before the final one (servers send one or two: 100, 103)
READ_SIZE = 65536
# Servers and NAT gateways drop idle connections silently; one idle longer than this is not reused.
IDLE_SECONDS = 50.0


class ResponseFormatError(OSError):
    """The server's answer is not HTTP/1.x as this reader accepts it (a transport failure, like a reset)."""


class HeaderValueError(ValueError):
    """A header this client will not send: it could split the request, or is not Latin-1 text."""


class ServerClosedError(ConnectionError):
    """The server closed the connection before its answer was complete."""


@dataclass(frozen=True)
class Answer:
    """A whole HTTP answer: status, headers (lower-case names, repeats joined by ', ') and body."""

    status: int
    headers: dict[str, str]
    body: bytes


def request_bytes(method: str, target: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """The request as written to the socket (Content-Length added); refuses names or values that could split it."""
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers.items():
        if not name.isascii() or not name.replace("-", "").isalnum() or "\r" in value or "\n" in value:
            raise HeaderValueError(f"header {name!r} cannot be sent")
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    except UnicodeEncodeError as exc:
        raise HeaderValueError("a header value is not Latin-1 text") from exc


def parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """(version, status, headers) of a response head without its blank line."""
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit() or rest[3:4] not in (b"", b" "):
        raise ResponseFormatError("not an HTTP/1.x status line")
    headers: dict[str, str] = {}
    name = ""
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and name:  # obsolete line folding: a continuation of the previous value
            headers[name] += " " + line.strip().decode("latin-1")
            continue
        raw_name, colon, raw_value = line.partition(b":")
        name = raw_name.strip().lower().decode("latin-1")
        if not colon or not name:
            raise ResponseFormatError("a malformed header line")
        value = raw_value.strip().decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return version.decode("latin-1"), int(code), headers


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def keeps_alive(version: str, headers: Mapping[str, str]) -> bool:
    """Whether the connection stays open after this answer (HTTP/1.0 only when it says keep-alive)."""
    tokens = _tokens(headers.get("connection", ""))
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def content_length(headers: Mapping[str, str]) -> int | None:
    """The declared body length; repeated equal values are one, differing or malformed ones an error."""
    value = headers.get("content-length")
    if value is None:
        return None
    values = {v.strip() for v in value.split(",")}
    # str.isdigit() also accepts Latin-1 superscripts (a header is decoded as Latin-1), which int() refuses.
    if len(values) != 1 or not next(iter(values)).isascii() or not next(iter(values)).isdigit():
        raise ResponseFormatError("a malformed Content-Length")
    return int(values.pop())


class _Reader:
    """Buffered reads from one socket for one answer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.received = 0

    def more(self) -> bool:
        data = self.sock.recv(READ_SIZE)
        self.received += len(data)
        if self.received > MAX_WIRE_BYTES:
            raise ResponseFormatError("an answer is too large (or never ends)")
        self.buf += data
        return bool(data)

    def until(self, marker: bytes, limit: int) -> bytes:
        """Bytes up to `marker` (consumed with it)."""
        start = 0
        while (end := self.buf.find(marker, start)) < 0:
            if len(self.buf) > limit:
                raise ResponseFormatError("an answer's head or chunk line is too long")
            start = max(0, len(self.buf) - len(marker) + 1)
            if not self.more():
                raise ServerClosedError("the server closed the connection before answering")
        data = bytes(self.buf[:end])
        del self.buf[: end + len(marker)]
        return data

    def exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self.more():
                raise ServerClosedError("the server closed the connection in the middle of an answer")
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def to_end(self) -> bytes:
        while self.more():
            if len(self.buf) > MAX_BODY_BYTES:
                raise ResponseFormatError("an answer's body is too large")
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def head(self) -> bytes:
        """The next response head; tolerates servers that end lines with a bare LF."""
        start = 0
        while True:
            crlf, lf = self.buf.find(b"\r\n\r\n", start), self.buf.find(b"\n\n", start)
            ends = [(i, n) for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
            if ends:
                end, size = min(ends)
                if end > MAX_HEAD_BYTES:
                    raise ResponseFormatError("an answer's head is too long")
                data = bytes(self.buf[:end])
                del self.buf[: end + size]
                return data
            if len(self.buf) > MAX_HEAD_BYTES:
                raise ResponseFormatError("an answer's head is too long")
            start = max(0, len(self.buf) - 3)
            if not self.more():
                raise ServerClosedError("the server closed the connection before answering")

    def chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.until(b"\n", MAX_HEAD_BYTES).rstrip(b"\r")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise ResponseFormatError("a malformed chunk size") from exc
            if size == 0:
                trailers = 0
                while line := self.until(b"\n", MAX_HEAD_BYTES).rstrip(b"\r"):  # trailers, up to the blank line
                    trailers += len(line)
                    if trailers > MAX_HEAD_BYTES:
                        raise ResponseFormatError("an answer's trailers are too long")
                return b"".join(parts)
            total += size
            if size < 0 or total > MAX_BODY_BYTES:
                raise ResponseFormatError("an answer's body is too large")
            parts.append(self.exactly(size))
            if self.until(b"\n", 2).rstrip(b"\r"):
                raise ResponseFormatError("a chunk longer than its size")


def read_answer(sock: socket.socket, method: str) -> tuple[Answer, bool]:
    """Read one whole answer (after any 1xx); and whether the connection can carry another request."""
    reader = _Reader(sock)
    for _ in range(MAX_INTERIM + 1):
        version, status, headers = parse_head(reader.head())
        if not 100 <= status < 200:
            break
        if status == 101:
            raise ResponseFormatError("the server switched protocols")
    else:
        raise ResponseFormatError("too many interim (1xx) answers")
    reusable = keeps_alive(version, headers)
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif "chunked" in _tokens(headers.get("transfer-encoding", "")):
        body = reader.chunked()
    elif (length := content_length(headers)) is not None:
        if length > MAX_BODY_BYTES:
            raise ResponseFormatError("an answer's body is too large")
        body = reader.exactly(length)
    else:
        body, reusable = reader.to_end(), False
    if reader.buf:  # bytes beyond the answer: the framing is not what the server meant; never reuse
        reusable = False
    return Answer(status, headers, body), reusable


class KeepAliveConnection:
    """A connection to one host, opened on first use and kept open while the server allows it."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port, self.timeout, self.tls = host, port, timeout, tls
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._sock: socket.socket | None = None
        self._last_used = 0.0
        self.connects = 0  # how many sockets this connection has opened (tests, benchmarks)

    def close(self) -> None:
        """Close the socket (the next request opens a new one)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _usable(self, sock: socket.socket) -> bool:
        """An idle socket the server has not closed (nothing to read) and that has not idled too long."""
        if self._clock() - self._last_used > self.idle_seconds:
            return False
        try:
            if hasattr(select, "poll"):  # select() refuses descriptors above 1023: a busy process would never reuse
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                return not poller.poll(0)  # readable, hung up or in error: closed or sent something unasked
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def _socket(self) -> socket.socket:
        sock = self._sock
        if sock is not None and self._usable(sock):
            return sock
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.connects += 1
        self._sock = sock
        return sock

    def request(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Send one request and read its whole answer; any failure closes the socket and raises OSError."""
        data = request_bytes(method, target, {**headers, "accept-encoding": "identity"}, body)
        sock = self._socket()
        try:
            sock.sendall(data)
            answer, reusable = read_answer(sock, method)
        except BaseException:
            self.close()
            raise
        if reusable:
            self._last_used = self._clock()
        else:
            self.close()
        return answer
