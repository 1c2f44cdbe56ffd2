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


def _flushing(body: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield from body
    finally:
        flush()  # metrics once the stream (and the stored turn) is done


def handler(event: Any, context: Any) -> StreamingResponse:
    """Lambda handler (runs on the streaming runtime layer)."""
    result = APP.handle(event)
    return StreamingResponse(_flushing(result.body), result.status, result.headers)
