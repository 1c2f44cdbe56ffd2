"""Server-sent events: incremental parsing of an upstream stream and framing of our own events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class SseEvent:
    """One event: its `data` text and the exact bytes it arrived as."""

    data: str
    raw: bytes


class SseParser:
    """Feed bytes as they arrive; get complete events back (LF or CRLF line endings)."""

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, data: bytes) -> Iterator[SseEvent]:
        """Events completed by this data."""
        self._buffer += data
        while True:
            end, sep_len = _event_end(self._buffer)
            if end < 0:
                if len(self._buffer) > self._max:
                    self._buffer = b""  # a runaway event is dropped, not buffered without bound
                return
            raw, self._buffer = self._buffer[: end + sep_len], self._buffer[end + sep_len :]
            event = _parse_event(raw)
            if event is not None:
                yield event

    def flush(self) -> Iterator[SseEvent]:
        """A last event not followed by a blank line (a cut stream)."""
        raw, self._buffer = self._buffer, b""
        if raw.strip():
            event = _parse_event(raw)
            if event is not None:
                yield event


def _event_end(buffer: bytes) -> tuple[int, int]:
    if b"\r" not in buffer:  # the common case: LF-only streams
        return buffer.find(b"\n\n"), 2
    best, length = -1, 0
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        index = buffer.find(sep)
        if index >= 0 and (best < 0 or index < best):
            best, length = index, len(sep)
    return best, length


def _parse_event(raw: bytes) -> SseEvent | None:
    if raw.startswith(b"data: ") and raw.count(b"\n") == 2 and raw.endswith(b"\n\n"):
        return SseEvent(raw[6:-2].decode("utf-8", "replace"), raw)  # one-line event: no splitting needed
    lines = raw.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
    return SseEvent("\n".join(data), raw) if data else None


def frame(doc: Any) -> bytes:
    """One `data:` event carrying JSON."""
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def error_event(code: str, message: str) -> bytes:
    """An OpenAI-style error sent inside a stream (after the first byte)."""
    return frame({"error": {"message": message, "type": "server_error", "param": None, "code": code}})
