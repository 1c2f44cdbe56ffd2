"""Stream function entry point: wires the app once per cold start, returns a streaming response."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from sigstream_runtime import StreamingResponse
from stream_app.app import build_app
from stream_app.observability import flush

# No threads and no connections here: the runtime may fork workers after init (AWS_LAMBDA_MAX_CONCURRENCY),
# so thread pools and keep-alive connections are made on first use in each worker.
APP = build_app(os.environ, time.time)
# Time kept, at the end of an invocation, to store the turn and settle its budget after the provider is cut off.
STORE_SECONDS = 2.0


def _after(work: Callable[[], None] | None) -> Callable[[], None]:
    def run() -> None:
        try:
            if work is not None:
                work()  # e.g. the rolling summary: the client already has the whole response
        finally:
            flush()  # metrics once the stream, the stored turn and the work after it are done

    return run


def handler(event: Any, context: Any) -> StreamingResponse:
    """Lambda handler (runs on the streaming runtime layer)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    left = remaining() / 1000 if callable(remaining) else None
    deadline = None if left is None else time.time() + left
    upstream_deadline = None if left is None else time.monotonic() + left - STORE_SECONDS
    result = APP.handle(event, deadline, upstream_deadline)
    return StreamingResponse(result.body, result.status, result.headers, after=_after(result.after))
