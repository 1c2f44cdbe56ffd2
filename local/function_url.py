"""A Function URL front: HTTP in, payload 2.0 event to the function, streamed or buffered response out."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler

from local.invocation import Invocation, InvocationFailed, ResponseData, ResponseEnd, ResponseStart
from local.pool import ACCOUNT_ID, FunctionPool
from local.quiet_server import QuietThreadingHTTPServer
from local.sigv4 import SignatureError, verify_sigv4
from local.url_event import (
    PRELUDE_CONTENT_TYPE,
    HttpRequest,
    HttpResponse,
    PreludeError,
    PreludeReader,
    buffered_response,
    build_event,
    cors_headers,
    prelude_response,
)

MAX_REQUEST = 6 * 1024 * 1024
# A refused body is still read (and dropped) up to this much / this long, so the client, which is busy
# writing it, gets to read our 413 instead of a connection reset; beyond either bound, we just close.
DISCARD_LIMIT = 64 * 1024 * 1024
LINGER_SECONDS = 10.0
Logger = Callable[[str, str], None]


class _TooLargeError(Exception):
    """The request body is over MAX_REQUEST."""


class _BadFramingError(Exception):
    """The request body's length cannot be known (bad Content-Length or chunked encoding)."""


class FunctionUrlServer(QuietThreadingHTTPServer):
    """Serves one function's URL on its own loopback port."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, pool: FunctionPool, credentials: dict[str, str], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _FunctionUrlHandler)
        self.pool = pool
        self.credentials = credentials
        self.url_id = uuid.uuid5(uuid.NAMESPACE_URL, pool.spec.logical_id).hex[:32]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The function's local URL (trailing slash, like AWS's)."""
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()


def _json_error(status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"Message": message}).encode()
    return status, [("content-type", "application/json")], body


class _FunctionUrlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE chunks must leave at once
    server: FunctionUrlServer
    _body = b""

    def log_message(self, format: str, *args: object) -> None:
        """Access logs off: functions log for themselves."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def handle_expect_100(self) -> bool:
        """No 100 Continue for a body we will refuse: the client gets the 413 without sending it."""
        try:
            if self._declared_length() > MAX_REQUEST:
                return True
        except _BadFramingError:
            return True  # answered with a 400 by _handle
        return super().handle_expect_100()

    def _declared_length(self) -> int:
        text = (self.headers.get("Content-Length") or "0").strip()
        if not (text.isascii() and text.isdigit()):
            raise _BadFramingError("bad Content-Length")
        return int(text)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            from local.runtime_api import ChunkedBodyError, read_chunked

            parts: list[bytes] = []
            total = 0

            def take(data: bytes) -> None:
                nonlocal total
                total += len(data)
                if total > MAX_REQUEST:
                    raise _TooLargeError
                parts.append(data)

            try:
                read_chunked(self.rfile, take)
            except ChunkedBodyError as exc:
                raise _BadFramingError(str(exc)) from exc
            return b"".join(parts)
        length = self._declared_length()
        if length > MAX_REQUEST:
            raise _TooLargeError
        return self.rfile.read(length)

    def _linger(self) -> None:
        """Half-close, then drain what the client is still sending (bounded), so it reads our answer.

        Closing a socket with unread data makes the kernel send a reset, which destroys the response in
        the client's receive buffer before a client that writes its whole body first ever reads it.
        """
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            drained = 0
            while drained < DISCARD_LIMIT and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                data = self.connection.recv(1 << 16)
                if not data:
                    return
                drained += len(data)
        except OSError:
            return

    def _take_body(self, extra: list[tuple[str, str]]) -> bool:
        """Read the body; on a body we cannot take, answer (413 or 400) and return False."""
        try:
            self._body = self._read_body()
            return True
        except _TooLargeError:
            status, message = 413, "Request must be smaller than 6291456 bytes"
        except _BadFramingError:
            status, message = 400, "Bad Request"
        self.close_connection = True
        code, headers, body = _with(extra, _json_error(status, message))
        self._send_whole(code, [*headers, ("connection", "close")], body)
        self._linger()
        return False

    def _send_whole(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        if ("connection", "close") in headers:
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        cors = self.server.pool.spec.url.cors if self.server.pool.spec.url else {}
        origin = self.headers.get("Origin")
        if self.command == "OPTIONS" and cors and origin and self.headers.get("Access-Control-Request-Method"):
            if self._take_body([]):
                self._send_whole(200, cors_headers(cors, origin, preflight=True), b"")
            return
        extra = cors_headers(cors, origin, preflight=False)
        if not self._take_body(extra):
            return
        body = self._body
        raw_path, _, raw_query = self.path.partition("?")
        req = HttpRequest(
            method=self.command,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=list(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
        )
        iam = None
        url = self.server.pool.spec.url
        if url and url.auth_type == "AWS_IAM":
            try:
                caller = verify_sigv4(
                    method=req.method,
                    raw_path=req.raw_path,
                    raw_query=req.raw_query,
                    headers=req.headers,
                    body=req.body,
                    secrets=self.server.credentials,
                    account_id=ACCOUNT_ID,
                    service="lambda",
                    region=self.server.pool.region,
                    now=datetime.now(UTC),
                )
            except SignatureError:
                self._send_whole(*_with(extra, _json_error(403, "Forbidden")))
                return
            iam = {
                "accessKey": caller.access_key,
                "accountId": caller.account_id,
                "callerId": caller.user_id,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": caller.user_arn,
                "userId": caller.user_id,
            }
        request_id = str(uuid.uuid4())
        event = build_event(
            req,
            url_id=self.server.url_id,
            region=self.server.pool.region,
            request_id=request_id,
            now=time.time(),
            iam=iam,
        )
        trace = event["headers"]["x-amzn-trace-id"]
        inv = self.server.pool.invoke(json.dumps(event).encode(), trace_id=trace, request_id=request_id)
        streaming = bool(url and url.invoke_mode == "RESPONSE_STREAM")
        self._relay(inv, extra, streaming)

    def _relay(self, inv: Invocation, extra: list[tuple[str, str]], streaming: bool) -> None:
        first = inv.events.get()
        if isinstance(first, InvocationFailed):
            status, headers, body = _json_error(502, "Internal Server Error")
            self._send_whole(status, headers + extra + [("x-amzn-errortype", first.error_type)], body)
            return
        if not isinstance(first, ResponseStart):
            raise TypeError(f"unexpected first event {first!r}")
        if not streaming or not first.streaming:
            self._relay_buffered(inv, first, extra)
            return
        self._relay_stream(inv, first, extra)

    def _relay_buffered(self, inv: Invocation, start: ResponseStart, extra: list[tuple[str, str]]) -> None:
        parts: list[bytes] = []
        while True:
            event = inv.events.get()
            if isinstance(event, ResponseData):
                parts.append(event.data)
                continue
            break
        if isinstance(event, ResponseEnd) and event.error_type:
            self._send_whole(*_with(extra, _json_error(502, "Internal Server Error")))
            return
        output = b"".join(parts)
        if start.content_type.startswith(PRELUDE_CONTENT_TYPE):
            try:
                found = PreludeReader().feed(output)
            except PreludeError:
                found = None
            if found is None:
                self._send_whole(*_with(extra, _json_error(502, "Internal Server Error")))
                return
            response, data = prelude_response(found[0]), found[1]
        elif start.streaming:  # a plain stream into a BUFFERED URL: raw bytes, runtime's content type
            response, data = HttpResponse(200, [("content-type", start.content_type)]), output
        else:
            response, data = buffered_response(output, start.content_type)
        self._send_whole(response.status, _merge(response.headers, extra), data)

    def _relay_stream(self, inv: Invocation, start: ResponseStart, extra: list[tuple[str, str]]) -> None:
        reader = PreludeReader() if start.content_type.startswith(PRELUDE_CONTENT_TYPE) else None
        if reader is None:
            self._start_stream(HttpResponse(200, [("content-type", start.content_type)]), extra)
        client_ok = True
        while True:
            event = inv.events.get()
            if isinstance(event, ResponseData):
                data = event.data
                if reader is not None:
                    try:
                        found = reader.feed(data)
                    except PreludeError:
                        self._send_whole(*_with(extra, _json_error(502, "Internal Server Error")))
                        self._drain(inv)
                        return
                    if found is None:
                        continue
                    reader = None
                    self._start_stream(prelude_response(found[0]), extra)
                    data = found[1]
                if data and client_ok:
                    client_ok = self._write_chunk(data)
                continue
            break
        if reader is not None:  # ended before the prelude was complete
            self._send_whole(*_with(extra, _json_error(502, "Internal Server Error")))
            return
        if not client_ok:
            return
        if isinstance(event, ResponseEnd) and event.error_type is None:
            self._write_raw(b"0\r\n\r\n")
        else:
            # An error after the first byte: cut the chunked body short so the client sees a
            # truncated (flagged) stream rather than a clean end.
            self.close_connection = True

    def _drain(self, inv: Invocation) -> None:
        while not isinstance(inv.events.get(), (ResponseEnd, InvocationFailed)):
            pass

    def _start_stream(self, response: HttpResponse, extra: list[tuple[str, str]]) -> None:
        self.send_response(response.status)
        for name, value in _merge(response.headers, extra):
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> bool:
        return self._write_raw(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_raw(self, data: bytes) -> bool:
        if self.command == "HEAD":  # headers only, as for a whole answer: a client reads no body after HEAD
            return True
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            # The client went away; the function keeps running, as on AWS.
            self.close_connection = True
            return False


def _merge(headers: list[tuple[str, str]], cors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Configured CORS headers win over the function's own."""
    names = {n for n, _ in cors}
    return [(n, v) for n, v in headers if n.lower() not in names] + cors


def _with(
    extra: list[tuple[str, str]], response: tuple[int, list[tuple[str, str]], bytes]
) -> tuple[int, list[tuple[str, str]], bytes]:
    status, headers, body = response
    return status, _merge(headers, extra), body
