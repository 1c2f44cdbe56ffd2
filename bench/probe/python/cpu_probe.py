"""A bench-only layer: runs a handler and logs its process's CPU, measured inside the function process.

`time.process_time()` (all threads of the process, nanosecond clock) at the handler's start, when the first
body chunk exists (the first byte), and when the body is exhausted; one JSON line per invocation on stdout:
{"probe": name, "cpu_first": s, "cpu_total": s, "cpu_stream": s, "chunks_out": n, "bytes_out": n}.
"""

import json
import time


def _report(name, start, first, end, chunks, size):
    line = {
        "probe": name,
        "cpu_first": first - start,
        "cpu_total": end - start,
        "cpu_stream": end - first,
        "chunks_out": chunks,
        "bytes_out": size,
    }
    print(json.dumps(line), flush=True)


def _streamed(name, response, start):
    body = response.body

    def measured():
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


def stream(event, context):
    """The Stream function (functions/stream/stream_handler.py)."""
    import stream_handler

    start = time.process_time()
    return _streamed("stream", stream_handler.handler(event, context), start)


def floor(event, context):
    """The floor baseline (bench/handlers/floor_handler.py)."""
    import floor_handler

    start = time.process_time()
    return _streamed("floor", floor_handler.handler(event, context), start)


def reference(event, context):
    """The tutorial reference (bench/handlers/reference_handler.py), buffered: its first byte is its end."""
    import reference_handler

    start = time.process_time()
    result = reference_handler.handler(event, context)
    end = time.process_time()
    _report("reference", start, end, end, 1, len(result.get("body", "")))
    return result
