"""What a handler returns to stream: status, headers, cookies and a body iterator."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Chunk = bytes | str
Body = Iterable[Chunk] | AsyncIterable[Chunk]

PRELUDE_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_SEPARATOR = b"\x00" * 8
DEFAULT_CONTENT_TYPE = "application/octet-stream"
BUFFERED_WARNING = (
    "sigstream_runtime: a StreamingResponse reached a runtime that cannot stream (the AWS_LAMBDA_EXEC_WRAPPER "
    "was not applied, as under `sam local invoke -d`); it is sent as one buffered Function URL response"
)
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "+json", "+xml")


@dataclass
class StreamingResponse:
    """A Function URL response whose body is sent chunk by chunk as it is produced."""

    body: Body
    status_code: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)
    # Called once the whole response (or the error that ended it) has been sent, before the next invocation:
    # work the client must not wait for. Lambda bills it, and its time counts against the function's timeout.
    after: Callable[[], None] | None = None

    def run_after(self) -> None:
        """Run `after`, if any; a failure is logged, never raised (the response is already out)."""
        if self.after is None:
            return
        try:
            self.after()
        except Exception as exc:
            line = {"level": "ERROR", "message": "after-response work failed", "errorType": type(exc).__name__}
            sys.stderr.write(json.dumps(line) + "\n")
            sys.stderr.flush()

    @property
    def content_type(self) -> str:
        """The response's content type (application/octet-stream unless the handler set one)."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        return headers.get("content-type", DEFAULT_CONTENT_TYPE)

    def prelude(self) -> bytes:
        """The Function URL metadata prelude, terminated by eight NUL bytes."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers.setdefault("content-type", DEFAULT_CONTENT_TYPE)
        meta = {"statusCode": self.status_code, "headers": headers, "cookies": self.cookies}
        # ensure_ascii keeps any NUL in a value escaped, so the separator stays unambiguous.
        return json.dumps(meta, separators=(",", ":")).encode() + PRELUDE_SEPARATOR

    def _asdict(self) -> dict[str, Any]:
        """The stock runtime's fallback: awslambdaric's encoder (simplejson) serialises objects by `_asdict`.

        Under the managed runtime without our exec wrapper (`sam local invoke -d` starts bootstrap.py
        directly) the whole body is collected and returned as a buffered Function URL response, with a
        warning, instead of failing with Runtime.MarshalError. A failure before the first chunk is raised
        (an invocation error); one after it ends the body as the streaming runtime ends a stream.
        """
        sys.stderr.write(json.dumps({"level": "WARNING", "message": BUFFERED_WARNING}) + "\n")
        sys.stderr.flush()
        parts: list[bytes] = []
        try:
            for chunk in _drain(self.body):
                parts.append(as_bytes(chunk))
        except Exception as exc:
            if not any(parts):
                raise
            from sigstream_runtime.marshal import error_payload, function_error_type  # only on this rare path

            payload = error_payload(exc)
            sys.stderr.write(json.dumps({"level": "ERROR", **payload}) + "\n")
            notice = in_band_error(self.content_type, function_error_type(exc), "", b"".join(parts)[-2:])
            parts.append(notice or b"")
        finally:
            close = getattr(self.body, "close", None)
            if callable(close):
                close()
            self.run_after()  # before the buffered answer goes out: this path cannot send it first
        data = b"".join(parts)
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers.setdefault("content-type", DEFAULT_CONTENT_TYPE)
        text = _is_text(headers["content-type"])
        try:
            body, encoded = (data.decode("utf-8"), False) if text else (base64.b64encode(data).decode(), True)
        except UnicodeDecodeError:
            body, encoded = base64.b64encode(data).decode(), True
        return {
            "statusCode": self.status_code,
            "headers": headers,
            "cookies": self.cookies,
            "body": body,
            "isBase64Encoded": encoded,
        }


def _drain(body: Body) -> Iterator[Chunk]:
    if not hasattr(body, "__aiter__"):
        yield from body
        return
    import asyncio
    import threading

    chunks: list[Chunk] = []
    failure: list[Exception] = []

    async def collect() -> None:
        try:
            async for chunk in body:
                chunks.append(chunk)
        except Exception as exc:  # re-raised below, after the chunks that came before it
            failure.append(exc)

    # On a thread of its own, so it works whatever event loop the calling thread may be running.
    thread = threading.Thread(target=asyncio.run, args=(collect(),))
    thread.start()
    thread.join()
    yield from chunks
    if failure:
        raise failure[0]


def _is_text(content_type: str) -> bool:
    ct = content_type.lower().split(";")[0].strip()
    return any(t in ct for t in _TEXT_TYPES)


def in_band_error(content_type: str, error_type: str, request_id: str, tail: bytes) -> bytes | None:
    """An error notice inside the body, where the content type has a way to carry one (SSE: an `error` event).

    Emulators (the RIE, `sam local invoke`) drop the error trailers, and browsers never see them; this
    shows the failure in the body itself. It names only the error type and request id: the message and
    stack trace stay in the log. `tail` is the end of what was sent, to close a half-written event first.
    """
    if content_type.lower().split(";")[0].strip() != "text/event-stream":
        return None
    doc = {
        "error": {
            "type": error_type,
            "code": "function_error",
            "message": "the response failed after it started; see the function log",
            "request_id": request_id,
        }
    }
    lead = b"" if tail.endswith(b"\n\n") or not tail else b"\n\n"
    return lead + b"event: error\ndata: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def as_bytes(chunk: Chunk) -> bytes:
    """Encode one body chunk; str chunks are UTF-8."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    raise TypeError(f"stream chunks must be bytes or str, got {type(chunk).__name__}")
