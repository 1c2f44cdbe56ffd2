"""Stream function entry point: wires the app once per cold start, returns a streaming response."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from stream_app.adapters import upstream_client as upstream

upstream.preload()  # the SDK imports on a background thread while the first request does AWS calls

from sigstream_runtime import StreamingResponse  # noqa: E402
from stream_app.app import build_app  # noqa: E402
from stream_app.observability import flush  # noqa: E402

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
