"""`make invoke`: one invocation through the real runtime, body printed to stdout as it streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO, TextIO

from local.invocation import InvocationFailed, ResponseData, ResponseEnd, ResponseStart
from local.resign import refresh_event
from local.stack import LocalStack, StackOptions
from local.url_event import PRELUDE_CONTENT_TYPE, PreludeReader


def invoke_once(root: Path, function: str, event_file: Path, out: BinaryIO, err: TextIO) -> int:
    """Start the stack without URLs, invoke `function` once, stream its output; exit code 1 on error."""
    stack = LocalStack(StackOptions(root=root, template=root / "template.yaml", log_stream=err, function_urls=False))
    try:
        stack.start()
        if function not in stack.pools:
            err.write(f"unknown function {function}; template has: {', '.join(stack.pools)}\n")
            return 2
        event = refresh_event(event_file.read_bytes(), stack.secret_values(), stack.sw1_app.get("proxy", ""))
        inv = stack.pools[function].invoke(event)
        reader: PreludeReader | None = None
        while True:
            event = inv.events.get()
            if isinstance(event, ResponseStart):
                if event.content_type.startswith(PRELUDE_CONTENT_TYPE):
                    reader = PreludeReader()
                continue
            if isinstance(event, ResponseData):
                data = event.data
                if reader is not None:
                    found = reader.feed(data)
                    if found is None:
                        continue
                    err.write(f"prelude: {json.dumps(found[0])}\n")
                    reader, data = None, found[1]
                out.write(data)
                out.flush()
                continue
            if isinstance(event, InvocationFailed):
                err.write(f"{event.error_type}: {event.body.decode('utf-8', 'replace')}\n")
                return 1
            if isinstance(event, ResponseEnd) and event.error_type:
                err.write(f"\nstream ended with {event.error_type}: {(event.error_body or b'').decode()}\n")
                return 1
            out.write(b"\n")
            return 0
    finally:
        stack.stop()
