"""The smallest handlers: a buffered dict, and a one-chunk stream."""

from __future__ import annotations

from typing import Any


def buffered(event: Any, context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": "ok"}


def streamed(event: Any, context: Any) -> Any:
    from sigstream_runtime import StreamingResponse  # awslambdaric runs only `buffered`

    return StreamingResponse(iter([b"x"]), headers={"content-type": "text/plain"})
