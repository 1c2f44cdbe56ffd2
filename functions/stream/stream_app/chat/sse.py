"""Server-sent events: incremental parsing of an upstream stream and framing of our own events."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


class SseParser:
    """Feed bytes as they arrive; get back the raw bytes of each completed event (LF, CRLF or CR line ends)."""

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished event are buffered."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Events completed by this data, each exactly as it arrived (separator included)."""
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            return self._feed_any(buffer)
        # The common case: LF-only streams, usually whole events per read.
        parts = buffer.split(b"\n\n")
        rest = parts.pop()
        self._keep(rest)
        return [part + b"\n\n" for part in parts]

    def _feed_any(self, buffer: bytes) -> list[bytes]:
        events: list[bytes] = []
        while True:
            end, sep_len = _event_end(buffer)
            if end < 0:
                self._keep(buffer)
                return events
            events.append(buffer[: end + sep_len])
            buffer = buffer[end + sep_len :]

    def _keep(self, rest: bytes) -> None:
        # A runaway event is dropped, not buffered without bound.
        self._buffer = rest if len(rest) <= self._max else b""

    def flush(self) -> list[bytes]:
        """A last event not followed by a blank line (a cut stream)."""
        raw, self._buffer = self._buffer, b""
        return [raw] if raw.strip() else []


def _event_end(buffer: bytes) -> tuple[int, int]:
    best, length = -1, 0
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        index = buffer.find(sep)
        if index >= 0 and (best < 0 or index < best):
            best, length = index, len(sep)
    return best, length


def event_data(raw: bytes) -> str | None:
    """The event's `data` (its data lines joined), or None for comments and events without data."""
    if raw.startswith(b"data: ") and raw.count(b"\n") == 2 and raw.endswith(b"\n\n"):
        return raw[6:-2].decode("utf-8", "replace")  # one-line event: no splitting needed
    lines = raw.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
    return "\n".join(data) if data else None


def frame(doc: Any) -> bytes:
    """One `data:` event carrying JSON."""
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def error_event(code: str, message: str) -> bytes:
    """An OpenAI-style error sent inside a stream (after the first byte)."""
    return frame({"error": {"message": message, "type": "server_error", "param": None, "code": code}})
