"""Pure translations between HTTP and Function URL payloads (event 2.0, prelude, buffered results)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from local.invocation import ResponseData

PRELUDE_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_SEPARATOR = b"\x00" * 8
MAX_PRELUDE = 64 * 1024
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "+json", "+xml")
_TEXT_TYPES_EXTRA = ("application/x-www-form-urlencoded", "application/graphql")


class PreludeError(Exception):
    """The streamed response did not start with a valid prelude."""


@dataclass(frozen=True)
class HttpRequest:
    """What arrived at the Function URL."""

    method: str
    raw_path: str
    raw_query: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str


@dataclass(frozen=True)
class HttpResponse:
    """Status line and headers to send to the client."""

    status: int
    headers: list[tuple[str, str]]


def _is_text(content_type: str) -> bool:
    ct = content_type.lower().split(";")[0].strip()
    return any(t in ct for t in _TEXT_TYPES) or ct in _TEXT_TYPES_EXTRA


def build_event(
    req: HttpRequest,
    *,
    url_id: str,
    region: str,
    request_id: str,
    now: float,
    iam: dict[str, Any] | None,
) -> dict[str, Any]:
    """Payload format 2.0, as Function URLs build it."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in req.headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    domain = f"{url_id}.lambda-url.{region}.on.aws"
    headers.setdefault("x-forwarded-for", req.source_ip)
    headers.setdefault("x-forwarded-proto", "https")
    headers.setdefault("x-forwarded-port", "443")
    headers.setdefault("x-amzn-trace-id", f"Root=1-{int(now):08x}-{request_id.replace('-', '')[:24]}")
    query: dict[str, str] = {}
    for key, value in parse_qsl(req.raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    context: dict[str, Any] = {
        "accountId": iam["accountId"] if iam else "anonymous",
        "apiId": url_id,
        "domainName": domain,
        "domainPrefix": url_id,
        "http": {
            "method": req.method,
            "path": req.raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": req.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if iam:
        context["authorizer"] = {"iam": iam}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": req.raw_path,
        "rawQueryString": req.raw_query,
        "headers": headers,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = context
    if req.body:
        text = _is_text(headers.get("content-type", ""))
        try:
            body = req.body.decode("utf-8") if text else None
        except UnicodeDecodeError:
            body = None
        event["body"] = body if body is not None else base64.b64encode(req.body).decode("ascii")
        event["isBase64Encoded"] = body is None
    else:
        event["isBase64Encoded"] = False
    return event


class PreludeReader:
    """Accumulates streamed bytes until the eight-NUL separator, then yields the metadata."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[dict[str, Any], bytes] | None:
        """Returns (prelude, leftover body bytes) once the separator has arrived."""
        self._buffer += data
        index = self._buffer.find(PRELUDE_SEPARATOR)
        if index < 0:
            if len(self._buffer) > MAX_PRELUDE:
                raise PreludeError("prelude too large or separator missing")
            return None
        try:
            meta = json.loads(self._buffer[:index])
        except ValueError as exc:
            raise PreludeError("prelude is not JSON") from exc
        if not isinstance(meta, dict):
            raise PreludeError("prelude is not an object")
        return meta, self._buffer[index + len(PRELUDE_SEPARATOR) :]


def prelude_response(meta: dict[str, Any]) -> HttpResponse:
    """Status and headers from a streaming prelude (cookies become Set-Cookie)."""
    headers = [(str(k), str(v)) for k, v in (meta.get("headers") or {}).items()]
    headers += [("set-cookie", str(c)) for c in meta.get("cookies") or []]
    return HttpResponse(int(meta.get("statusCode", 200)), headers)


def buffered_response(output: bytes, content_type: str) -> tuple[HttpResponse, bytes]:
    """A BUFFERED function result turned into an HTTP response, per the Function URL rules."""
    try:
        result = json.loads(output) if content_type.startswith("application/json") else None
    except ValueError:
        result = None
    if not isinstance(result, dict) or "statusCode" not in result:
        return HttpResponse(200, [("content-type", "application/json")]), output
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers += [(str(name), str(v)) for v in values]
    headers += [("set-cookie", str(c)) for c in result.get("cookies") or []]
    body = result.get("body") or ""
    if not isinstance(body, str):
        body = json.dumps(body)
    data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("content-type", "application/json"))
    return HttpResponse(int(result["statusCode"]), headers), data


def joined(events: list[ResponseData]) -> bytes:
    """Concatenate buffered response data."""
    return b"".join(e.data for e in events)


def cors_headers(cors: dict[str, Any], origin: str | None, preflight: bool) -> list[tuple[str, str]]:
    """CORS headers Lambda adds for a configured Function URL (empty when the origin is not allowed)."""
    if not cors or not origin:
        return []
    allowed = [o.rstrip("/") for o in cors.get("AllowOrigins", [])]
    if "*" in allowed:
        allow_origin = "*" if not cors.get("AllowCredentials") else origin
    elif origin.rstrip("/") in allowed:
        allow_origin = origin
    else:
        return []
    headers = [("access-control-allow-origin", allow_origin)]
    if cors.get("AllowCredentials"):
        headers.append(("access-control-allow-credentials", "true"))
    if allow_origin != "*":
        headers.append(("vary", "Origin"))
    if preflight:
        if cors.get("AllowMethods"):
            headers.append(("access-control-allow-methods", ",".join(cors["AllowMethods"])))
        if cors.get("AllowHeaders"):
            headers.append(("access-control-allow-headers", ",".join(cors["AllowHeaders"])))
        if cors.get("MaxAge") is not None:
            headers.append(("access-control-max-age", str(cors["MaxAge"])))
    elif cors.get("ExposeHeaders"):
        headers.append(("access-control-expose-headers", ",".join(cors["ExposeHeaders"])))
    return headers
