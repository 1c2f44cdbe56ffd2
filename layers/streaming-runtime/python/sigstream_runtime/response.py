"""What a handler returns to stream: status, headers, cookies and a body iterator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field

Chunk = bytes | str
Body = Iterable[Chunk] | AsyncIterable[Chunk]

PRELUDE_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_SEPARATOR = b"\x00" * 8


@dataclass
class StreamingResponse:
    """A Function URL response whose body is sent chunk by chunk as it is produced."""

    body: Body
    status_code: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)

    def prelude(self) -> bytes:
        """The Function URL metadata prelude, terminated by eight NUL bytes."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers.setdefault("content-type", "application/octet-stream")
        meta = {"statusCode": self.status_code, "headers": headers, "cookies": self.cookies}
        # ensure_ascii keeps any NUL in a value escaped, so the separator stays unambiguous.
        return json.dumps(meta, separators=(",", ":")).encode() + PRELUDE_SEPARATOR


def as_bytes(chunk: Chunk) -> bytes:
    """Encode one body chunk; str chunks are UTF-8."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    raise TypeError(f"stream chunks must be bytes or str, got {type(chunk).__name__}")
