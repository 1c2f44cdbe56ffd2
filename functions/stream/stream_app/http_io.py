"""Function URL events in, (status, headers, body chunks) out."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sigstream.core.errors import BadRequestError, PayloadTooLargeError, SigstreamError

JSON_HEADERS = {"content-type": "application/json", "cache-control": "no-store"}
SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


@dataclass(frozen=True)
class Request:
    """The parts of a Function URL event the app uses."""

    method: str
    path: str
    raw_query: str
    headers: dict[str, str]
    body: bytes
    request_id: str
    source_ip: str = ""
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class HttpResult:
    """What to send back: status, headers, and body chunks (streamed as produced)."""

    status: int
    headers: dict[str, str]
    body: Iterable[bytes]
    after: Callable[[], None] | None = None  # work once the whole response has gone out (e.g. the summary)


def parse_event(event: Any, max_body: int) -> Request:
    """Validate a payload-2.0 event; the body size is checked before it is decoded."""
    if not isinstance(event, dict) or event.get("version") != "2.0":
        raise BadRequestError("not a Function URL request", param="event")
    context = event.get("requestContext") or {}
    http = context.get("http") or {}
    raw_body = event.get("body") or ""
    if not isinstance(raw_body, str):
        raise BadRequestError("body must be text", param="body")
    # base64 inflates by 4/3: refuse before decoding anything.
    if len(raw_body) > (max_body * 4 // 3 + 4 if event.get("isBase64Encoded") else max_body * 4):
        raise PayloadTooLargeError(f"request body exceeds {max_body} bytes")
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw_body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequestError("body is not valid base64", param="body") from exc
    else:
        body = raw_body.encode("utf-8", "surrogatepass")
    if len(body) > max_body:
        raise PayloadTooLargeError(f"request body exceeds {max_body} bytes")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    query = {str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()}
    return Request(
        method=str(http.get("method", "GET")).upper(),
        path=str(event.get("rawPath") or "/"),
        raw_query=str(event.get("rawQueryString") or ""),
        headers=headers,
        body=body,
        request_id=str(context.get("requestId", "")),
        source_ip=str(http.get("sourceIp", "")),
        query=query,
    )


def json_result(
    status: int, doc: Any, headers: dict[str, str] | None = None, *, after: Callable[[], None] | None = None
) -> HttpResult:
    """A whole JSON response."""
    return HttpResult(status, {**JSON_HEADERS, **(headers or {})}, [json.dumps(doc).encode()], after)


def empty_result(status: int = 204, headers: dict[str, str] | None = None) -> HttpResult:
    """A response without a body (204: nothing to resume)."""
    return HttpResult(status, {"cache-control": "no-store", **(headers or {})}, [])


def error_result(error: SigstreamError) -> HttpResult:
    """An OpenAI-shaped JSON error with the error's status and headers."""
    return json_result(error.status, error.body(), error.headers())
