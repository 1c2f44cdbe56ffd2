"""HTTP client for the Lambda Runtime API over one keep-alive connection."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

API_VERSION = "2018-06-01"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY_HEADER = "Lambda-Runtime-Function-Error-Body"
INVOCATION_ID_HEADER = "Lambda-Runtime-Invocation-Id"
# Larger writes than this are split so the socket send stays bounded; small chunks go out as they come.
MAX_FRAME = 1 << 20


class RuntimeClientError(Exception):
    """Root of the runtime client's errors."""


class RuntimeApiError(RuntimeClientError):
    """The Runtime API answered something other than success."""

    def __init__(self, path: str, status: int, body: bytes) -> None:
        super().__init__(f"{path} -> {status}: {body[:200]!r}")
        self.status = status


@dataclass(frozen=True)
class Invocation:
    """One event handed out by GET /runtime/invocation/next."""

    request_id: str
    body: bytes
    content_type: str
    deadline_ms: int
    function_arn: str
    trace_id: str | None
    client_context: str | None
    cognito_identity: str | None
    tenant_id: str | None
    invocation_id: str | None


def frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (caller guarantees data is non-empty)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def error_trailers(error_type: str, payload: dict[str, Any]) -> bytes:
    """Terminating zero chunk plus the error trailers, body as standard base64 JSON."""
    encoded = base64.b64encode(json.dumps(payload).encode()).decode("ascii")
    safe_type = "".join(ch for ch in error_type if ch.isalnum() or ch in "._") or "Function.Unknown"
    return f"0\r\n{ERROR_TYPE_HEADER}: {safe_type}\r\n{ERROR_BODY_HEADER}: {encoded}\r\n\r\n".encode()


class RuntimeApiClient:
    """Talks to $AWS_LAMBDA_RUNTIME_API; reconnects only when the connection drops."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._host, self._port = host or address, int(port or 80)
        self._conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        # No timeout: /next long-polls for as long as the environment is idle.
        conn = http.client.HTTPConnection(self._host, self._port)
        conn.connect()
        conn.sock.setsockopt(6, 1, 1)  # TCP_NODELAY: each chunk leaves at once
        return conn

    def close(self) -> None:
        """Drop the connection (before forking workers)."""
        self._conn.close()

    def _reset(self) -> None:
        self._conn.close()
        self._conn = self._connect()

    def _finish(self, path: str, ok: tuple[int, ...]) -> bytes:
        response = self._conn.getresponse()
        body = response.read()
        if response.will_close:
            self._reset()
        if response.status not in ok:
            raise RuntimeApiError(path, response.status, body)
        return body

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        url = f"/{API_VERSION}{path}"
        for attempt in (0, 1):
            try:
                self._conn.request(method, url, body=body, headers=headers)
                return self._finish(url, (200, 202))
            except (ConnectionError, http.client.HTTPException):
                # A stale keep-alive connection is retried once on a fresh one.
                if attempt:
                    raise
                self._reset()
        raise AssertionError("unreachable")

    def next_invocation(self) -> Invocation:
        """Block until the next event arrives."""
        url = f"/{API_VERSION}/runtime/invocation/next"
        for attempt in (0, 1):
            try:
                self._conn.request("GET", url)
                response = self._conn.getresponse()
                body = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                if attempt:
                    raise
                self._reset()
        if response.status != 200:
            raise RuntimeApiError(url, response.status, body)
        h = response.headers
        return Invocation(
            request_id=h.get("Lambda-Runtime-Aws-Request-Id", ""),
            body=body,
            content_type=h.get("Content-Type", "application/json"),
            deadline_ms=int(h.get("Lambda-Runtime-Deadline-Ms", "0") or 0),
            function_arn=h.get("Lambda-Runtime-Invoked-Function-Arn", ""),
            trace_id=h.get("Lambda-Runtime-Trace-Id"),
            client_context=h.get("Lambda-Runtime-Client-Context"),
            cognito_identity=h.get("Lambda-Runtime-Cognito-Identity"),
            tenant_id=h.get("Lambda-Runtime-Aws-Tenant-Id"),
            invocation_id=h.get(INVOCATION_ID_HEADER),
        )

    @staticmethod
    def _echo(inv: Invocation, headers: dict[str, str]) -> dict[str, str]:
        if inv.invocation_id:
            headers[INVOCATION_ID_HEADER] = inv.invocation_id
        return headers

    def post_response(self, inv: Invocation, body: bytes, content_type: str) -> None:
        """Send a buffered response, exactly as awslambdaric does."""
        headers = self._echo(inv, {"Content-Type": content_type})
        self._request("POST", f"/runtime/invocation/{inv.request_id}/response", body, headers)

    def post_error(self, inv: Invocation, error_type: str, payload: dict[str, Any]) -> None:
        """Report a failure that happened before any response byte was sent."""
        headers = self._echo(inv, {"Content-Type": "application/json", ERROR_TYPE_HEADER: error_type})
        path = f"/runtime/invocation/{inv.request_id}/error"
        self._request("POST", path, json.dumps(payload).encode(), headers)

    def post_init_error(self, error_type: str, payload: dict[str, Any]) -> None:
        """Report that the handler could not be loaded."""
        headers = {"Content-Type": "application/json", ERROR_TYPE_HEADER: error_type}
        self._request("POST", "/runtime/init/error", json.dumps(payload).encode(), headers)

    def stream_response(self, inv: Invocation, content_type: str, chunks: Iterator[bytes]) -> None:
        """Send a streaming response: each non-empty chunk is framed and written as it comes.

        `chunks` may raise after the first chunk; the error then goes out as trailers. A
        `StreamAbortedError` raised by the iterator carries the error type and payload to send.
        """
        url = f"/{API_VERSION}/runtime/invocation/{inv.request_id}/response"
        conn = self._conn
        # http.client.request() cannot write trailers, so the request is framed by hand.
        conn.putrequest("POST", url, skip_accept_encoding=True)
        for name, value in self._echo(
            inv,
            {
                "Lambda-Runtime-Function-Response-Mode": "streaming",
                "Transfer-Encoding": "chunked",
                "Trailer": f"{ERROR_TYPE_HEADER}, {ERROR_BODY_HEADER}",
                "Content-Type": content_type,
            },
        ).items():
            conn.putheader(name, value)
        conn.endheaders()
        ending = b"0\r\n\r\n"
        try:
            for data in chunks:
                for start in range(0, len(data), MAX_FRAME):
                    conn.send(frame(data[start : start + MAX_FRAME]))
        except StreamAbortedError as abort:
            ending = error_trailers(abort.error_type, abort.payload)
        except (ConnectionError, OSError):
            # The Runtime API went away (e.g. 410 after a timeout); start clean for /next.
            self._reset()
            return
        conn.send(ending)
        try:
            self._finish(url, (200, 202))
        except RuntimeApiError:
            raise
        except (ConnectionError, http.client.HTTPException):
            self._reset()


class StreamAbortedError(RuntimeClientError):
    """Raised inside a chunk iterator to end the stream with error trailers."""

    def __init__(self, error_type: str, payload: dict[str, Any]) -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.payload = payload
