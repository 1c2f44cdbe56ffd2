"""Stream function entry point: wires the app once per cold start, returns a streaming response."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sigstream_runtime import StreamingResponse
from stream_app.app import build_app
from stream_app.observability import flush

# No threads and no connections here: the runtime may fork workers after init (AWS_LAMBDA_MAX_CONCURRENCY),
# so thread pools and keep-alive connections are made on first use in each worker.
APP = build_app(os.environ, time.time)
# Time kept, at the end of an invocation, to store the turn and settle its budget after the provider is cut off.
STORE_SECONDS = 2.0


def _flushing(body: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield from body
    finally:
        flush()  # metrics once the stream (and the stored turn) is done


def handler(event: Any, context: Any) -> StreamingResponse:
    """Lambda handler (runs on the streaming runtime layer)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    deadline = time.monotonic() + remaining() / 1000 - STORE_SECONDS if callable(remaining) else None
    result = APP.handle(event, deadline)
    return StreamingResponse(_flushing(result.body), result.status, result.headers)
