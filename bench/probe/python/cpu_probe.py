"""A bench-only layer: runs a handler and logs its process's CPU, measured inside the function process.

`time.process_time()` (all threads of the process, nanosecond clock) at the handler's start, when the first
body chunk exists (the first byte), and when the body is exhausted; one JSON line per invocation on stdout:
{"probe": name, "cpu_first": s, "cpu_total": s, "cpu_stream": s, "chunks_out": n, "bytes_out": n}.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator
from typing import Any


def _report(name: str, start: float, first: float, end: float, chunks: int, size: int) -> None:
    line = {
        "probe": name,
        "cpu_first": first - start,
        "cpu_total": end - start,
        "cpu_stream": end - first,
        "chunks_out": chunks,
        "bytes_out": size,
    }
    print(json.dumps(line), flush=True)


def _streamed(name: str, response: Any, start: float) -> Any:
    body = response.body

    def measured() -> Iterator[bytes]:
        first = None
        chunks = size = 0
        try:
            for chunk in body:
                if first is None:
                    first = time.process_time()
                chunks += 1
                size += len(chunk)
                yield chunk
        finally:
            end = time.process_time()
            _report(name, start, first or end, end, chunks, size)

    response.body = measured()
    return response


def _handler(module: str) -> Any:
    # Imported on first use: the function's own handler module is on its path, the others' are not.
    return importlib.import_module(module).handler


def stream(event: Any, context: Any) -> Any:
    """The Stream function (functions/stream/stream_handler.py)."""
    handler = _handler("stream_handler")
    start = time.process_time()
    return _streamed("stream", handler(event, context), start)


def floor(event: Any, context: Any) -> Any:
    """The floor baseline (bench/handlers/floor_handler.py)."""
    handler = _handler("floor_handler")
    start = time.process_time()
    return _streamed("floor", handler(event, context), start)


def reference(event: Any, context: Any) -> Any:
    """The tutorial reference (bench/handlers/reference_handler.py), buffered: its first byte is its end."""
    handler = _handler("reference_handler")
    start = time.process_time()
    result = handler(event, context)
    end = time.process_time()
    _report("reference", start, end, end, 1, len(result.get("body", "")))
    return result
