"""The Lambda Runtime API, served to one execution environment."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Protocol

from local.invocation import Invocation, InvocationFailed, ResponseData, ResponseEnd, ResponseStart
from local.quiet_server import QuietThreadingHTTPServer


class Environment(Protocol):
    """What the Runtime API needs of the execution environment it serves (local.pool implements it)."""

    function_arn: str
    running: dict[str, Invocation]
    expired: set[str]

    def next_invocation(self) -> Invocation | None:
        """Block until work arrives."""

    def finished(self, inv: Invocation) -> None:
        """The runtime answered this invocation."""

    def init_failed(self, error_type: str, body: bytes) -> None:
        """The runtime reported an init error."""


PREFIX = "/2018-06-01"
MAX_BUFFERED = 6 * 1024 * 1024
MAX_STREAMED = 200 * 1024 * 1024
_INVOCATION_PATH = re.compile(rf"^{PREFIX}/runtime/invocation/([^/]+)/(response|error)$")
_ERROR_TYPE = re.compile(r"^(Runtime|Function)\.[A-Z][a-zA-Z]+$")


class ChunkedBodyError(Exception):
    """The runtime sent a malformed chunked body."""


class Readable(Protocol):
    """What read_chunked reads from (a socket file, a BytesIO)."""

    def readline(self, size: int | None = -1, /) -> bytes:
        """One line, at most `size` bytes."""

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to `size` bytes."""


def read_chunked(rfile: Readable, on_chunk: Callable[[bytes], None]) -> dict[str, str]:
    """Read an HTTP/1.1 chunked body, calling on_chunk for each chunk; returns the trailers."""
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\r\n"):
            raise ChunkedBodyError("truncated chunk header")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise ChunkedBodyError(f"bad chunk size {line!r}") from exc
        if size == 0:
            break
        data = rfile.read(size)
        if len(data) != size or rfile.read(2) != b"\r\n":
            raise ChunkedBodyError("truncated chunk")
        on_chunk(data)
    trailers: dict[str, str] = {}
    while True:
        line = rfile.readline(65536)
        if line in (b"\r\n", b"\n", b""):
            return trailers
        name, _, value = line.decode("latin-1").partition(":")
        trailers[name.strip().lower()] = value.strip()


def normalise_error_type(value: str | None, category: str = "Function") -> str:
    """Types not of the form Function.Xxx / Runtime.Xxx become `<category>.Unknown`, as in RAPID."""
    return value if value and _ERROR_TYPE.match(value) else f"{category}.Unknown"


class RuntimeApiServer(QuietThreadingHTTPServer):
    """One Runtime API endpoint for one environment (its own port)."""

    daemon_threads = True

    allow_reuse_address = True  # a restarted Runtime API can take its old port back at once

    def __init__(self, environment: Environment, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _RuntimeApiHandler)
        self.environment = environment
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        return f"127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall
    server: RuntimeApiServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the Runtime API is chatty."""

    def _reply(self, status: int, payload: dict[str, str]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, error_type: str, message: str) -> None:
        self._reply(status, {"errorType": error_type, "errorMessage": message})

    def _drain(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            read_chunked(self.rfile, parts.append)
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        if self.path != f"{PREFIX}/runtime/invocation/next":
            self._error(404, "NotFound", "unknown path")
            return
        inv = self.server.environment.next_invocation()
        if inv is None:  # the environment is shutting down
            self.close_connection = True
            self._error(500, "EnvironmentShutdown", "environment stopped")
            return
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.server.environment.function_arn,
            "Lambda-Runtime-Trace-Id": inv.trace_id,
            "Lambda-Runtime-Client-Context": inv.client_context or "",
            "Lambda-Runtime-Invocation-Id": inv.invocation_id,
        }
        self.send_response(200)
        for name, value in headers.items():
            if value:  # RAPID sets these only when non-empty
                self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(inv.event)))
        self.end_headers()
        self.wfile.write(inv.event)

    def do_POST(self) -> None:
        if self.path == f"{PREFIX}/runtime/init/error":
            body = self._drain()
            error_type = normalise_error_type(self.headers.get("Lambda-Runtime-Function-Error-Type"), "Runtime")
            self.server.environment.init_failed(error_type, body)
            self._reply(202, {"status": "OK"})
            return
        match = _INVOCATION_PATH.match(self.path)
        if not match:
            self._drain()
            self._error(404, "NotFound", "unknown path")
            return
        inv = self.server.environment.running.get(match.group(1))
        if inv is None or inv.finished:
            self._drain()
            if inv is not None:  # a late answer to a timed-out invocation: its worker is free again
                self.server.environment.finished(inv)
            gone = inv is not None or match.group(1) in self.server.environment.expired
            if gone:
                self._error(410, "InvocationGone", "invocation already ended (timed out)")
            else:
                self._error(400, "InvalidRequestID", "unknown or already answered request id")
            return
        echoed = self.headers.get("Lambda-Runtime-Invocation-Id")
        if echoed and echoed != inv.invocation_id:
            self._drain()
            self._error(410, "InvocationGone", "stale invocation id")
            return
        if match.group(2) == "error":
            self._post_error(inv)
        else:
            self._post_response(inv)

    def _post_error(self, inv: Invocation) -> None:
        body = self._drain()
        if inv.started:
            self._error(403, "InvalidStateTransition", "response already started")
            return
        error_type = normalise_error_type(self.headers.get("Lambda-Runtime-Function-Error-Type"))
        inv.emit(InvocationFailed(error_type, body))
        self.server.environment.finished(inv)
        self._reply(202, {"status": "OK"})

    def _post_response(self, inv: Invocation) -> None:
        mode = self.headers.get("Lambda-Runtime-Function-Response-Mode")
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        if mode is not None and mode != "streaming":
            self._drain()
            self._error(400, "InvalidFunctionResponseMode", f"unsupported response mode {mode!r}")
            return
        content_type = self.headers.get("Content-Type", "application/json")
        if not chunked:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if len(body) > MAX_BUFFERED:
                inv.emit(InvocationFailed("Function.ResponseSizeTooLarge", b'{"errorMessage":"response too large"}'))
                self.server.environment.finished(inv)
                self._error(413, "RequestEntityTooLarge", "response payload exceeds 6 MB")
                return
            inv.emit(ResponseStart(content_type, streaming=False))
            inv.emit(ResponseData(body))
            inv.emit(ResponseEnd())
            self.server.environment.finished(inv)
            self._reply(202, {"status": "OK"})
            return
        inv.emit(ResponseStart(content_type, streaming=True))
        total = 0

        def relay(data: bytes) -> None:
            nonlocal total
            total += len(data)
            if total <= MAX_STREAMED:
                inv.emit(ResponseData(data))

        try:
            trailers = read_chunked(self.rfile, relay)
        except (ChunkedBodyError, OSError):
            inv.emit(ResponseEnd("Runtime.TruncatedResponse", None))
            self.server.environment.finished(inv)
            self.close_connection = True
            return
        error_type = trailers.get("lambda-runtime-function-error-type")
        error_body = trailers.get("lambda-runtime-function-error-body")
        if total > MAX_STREAMED:
            error_type, error_body = "Function.ResponseSizeTooLarge", None
        inv.emit(ResponseEnd(error_type, error_body.encode() if error_body else None))
        self.server.environment.finished(inv)
        self._reply(202, {"status": "OK"})
