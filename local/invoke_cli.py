"""`make invoke`: one invocation through the real runtime, body printed to stdout as it streams.

stderr gets the status line (as a Function URL client would see it) and, when the function fails,
one clear error line; the exit code is 1 when the function failed (before or after its first byte).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from local.event_prep import Caller, EventFileError, check_event, prepare_event
from local.invocation import InvocationFailed, ResponseData, ResponseEnd, ResponseStart
from local.pool import FunctionPool
from local.stack import LocalStack, StackOptions
from local.url_event import (
    PRELUDE_CONTENT_TYPE,
    HttpRequest,
    PreludeReader,
    buffered_response,
    build_event,
    prelude_response,
)


@dataclass
class InvokeOutcome:
    """What a Function URL client would get from one invocation, and how the function ended."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    streamed: bool = False
    error_type: str | None = None  # set when the function failed
    error: dict[str, Any] | None = None  # the runtime's error document (errorType, errorMessage, ...)
    failed_after_start: bool = False


def _decode_error(data: bytes | None, base64_encoded: bool) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        doc = json.loads(base64.b64decode(data) if base64_encoded else data)
    except ValueError:
        return {"errorMessage": data.decode("utf-8", "replace")}
    return doc if isinstance(doc, dict) else {"errorMessage": str(doc)}


def run_invocation(
    pool: FunctionPool,
    event: bytes,
    on_start: Callable[[InvokeOutcome], None] | None = None,
    on_data: Callable[[bytes], None] | None = None,
    timeout: float | None = None,
) -> InvokeOutcome:
    """Invoke once; streamed bodies are handed to `on_data` as they arrive (and kept in `body`)."""
    inv = pool.invoke(event)
    out = InvokeOutcome()
    reader: PreludeReader | None = None
    content_type = ""
    parts: list[bytes] = []
    started = False

    def begin() -> None:
        nonlocal started
        started = True
        if on_start:
            on_start(out)

    while True:
        item = inv.events.get(timeout=timeout)
        if isinstance(item, ResponseStart):
            content_type, out.streamed = item.content_type, item.streaming
            if content_type.startswith(PRELUDE_CONTENT_TYPE):
                reader = PreludeReader()
            elif item.streaming:
                out.status, out.headers = 200, {"content-type": content_type}
                begin()
            continue
        if isinstance(item, ResponseData):
            data = item.data
            if reader is not None:
                found = reader.feed(data)
                if found is None:
                    continue
                response = prelude_response(found[0])
                out.status, out.headers = response.status, dict(response.headers)
                reader, data = None, found[1]
                begin()
            parts.append(data)
            if out.streamed and data and on_data:
                on_data(data)
            continue
        if isinstance(item, InvocationFailed):
            out.status, out.error_type = 502, item.error_type  # what a Function URL answers
            out.error = _decode_error(item.body, base64_encoded=False)
            return out
        if not isinstance(item, ResponseEnd):
            raise TypeError(f"unexpected response event {item!r}")
        out.body = b"".join(parts)
        if item.error_type:
            out.error_type, out.failed_after_start = item.error_type, True
            out.error = _decode_error(item.error_body, base64_encoded=True)
            return out
        if not out.streamed:
            response, data = buffered_response(out.body, content_type)
            out.status, out.headers, out.body = response.status, dict(response.headers), data
            begin()
            if on_data and data:
                on_data(data)
        elif not started:  # an empty stream still has its prelude; an empty body without one is a 200
            out.status = out.status or 200
            begin()
        return out


def pool_caller(pool: FunctionPool, region: str) -> Caller:
    """Call the Stream function through its pool with a Function URL event (as its URL would)."""

    def call(method: str, path: str, query: str, body: bytes) -> int:
        request = HttpRequest(method, path, query, [("content-type", "application/json")], body, "127.0.0.1")
        event = build_event(
            request, url_id="local", region=region, request_id=str(uuid.uuid4()), now=time.time(), iam=None
        )
        return run_invocation(pool, json.dumps(event).encode(), timeout=120).status

    return call


def status_line(outcome: InvokeOutcome) -> str:
    """`HTTP 200  content-type: text/event-stream`: what a Function URL client sees first."""
    content_type = next((v for k, v in outcome.headers.items() if k.lower() == "content-type"), "")
    return f"HTTP {outcome.status}" + (f"  content-type: {content_type}" if content_type else "")


def error_line(outcome: InvokeOutcome) -> str:
    """One line naming the failure and what the HTTP client saw."""
    doc = outcome.error or {}
    message = str(doc.get("errorMessage") or "").strip()
    what = f"{outcome.error_type}: {message}" if message else str(outcome.error_type)
    if outcome.failed_after_start:
        return f"error: the function failed after the response started ({what}); the client saw a cut-off stream"
    return f"error: the invocation failed ({what}); a Function URL answers 502"


def print_invocation(pool: FunctionPool, event: bytes, out: BinaryIO, err: TextIO) -> int:
    """Invoke; status line to `err` when known, body to `out` as it streams, then one error line if it failed."""

    def started(outcome: InvokeOutcome) -> None:
        err.write(status_line(outcome) + "\n")
        err.flush()

    def data(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    outcome = run_invocation(pool, event, started, data)
    out.write(b"\n")
    out.flush()
    if not outcome.error_type:
        return 0
    if not outcome.failed_after_start:
        err.write(status_line(outcome) + "\n")
    err.write(error_line(outcome) + "\n")
    return 1


def invoke_once(root: Path, function: str, event_file: Path, out: BinaryIO, err: TextIO) -> int:
    """Start the stack without URLs, invoke `function` once, stream its output; exit code 1 on error."""
    if not event_file.is_file():
        err.write(f"make invoke: no event file {event_file} (the events/ folder lists them; see events/README.md)\n")
        return 2
    try:
        check_event(event_file.read_bytes())
    except EventFileError as exc:
        err.write(f"make invoke: {event_file} is {exc}\n")
        return 2
    stack = LocalStack(StackOptions(root=root, template=root / "template.yaml", log_stream=err, function_urls=False))
    try:
        stack.start()
        if function not in stack.pools:
            err.write(f"make invoke: unknown function {function}; the template has {', '.join(stack.pools)}\n")
            return 2
        stream_pool = next((p for k, p in stack.pools.items() if k.startswith("Stream")), None)
        caller = pool_caller(stream_pool, stack.pools[function].region) if stream_pool else None
        try:
            event = prepare_event(
                event_file.read_bytes(), stack.secret_values(), stack.sw1_app.get("proxy", ""), caller
            )
        except EventFileError as exc:
            err.write(f"make invoke: {event_file} is {exc}\n")
            return 2
        return print_invocation(stack.pools[function], event, out, err)
    finally:
        stack.stop()
