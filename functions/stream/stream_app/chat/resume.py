"""Resuming a reply in progress (pure): what a reconnecting client has not seen yet, encoded as OpenAI SSE.

Positions are characters of the reply's content: every event of a live conversation stream carries
`id: <characters so far>`, so a client's `Last-Event-ID` says how much it has, and the resume stream sends only
the rest. `ReplyProgress` items come from stream_app/reply_follow.py (which polls the stored reply); any encoder
can turn them into bytes: `openai_events` here, `UiStreamEncoder.resume` for the AI SDK's UI message stream.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sigstream.core.errors import BadRequestError
from stream_app.chat.sse import DONE, error_event

MAX_POSITION = 10**9
_POSITION = re.compile(r"[0-9]{1,10}")
KEEPALIVE = b": keep-alive\n\n"


def parse_last_event_id(value: str | None) -> int | None:
    """A `Last-Event-ID` header as a reply position (None when absent or empty); anything else is a 400."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not _POSITION.fullmatch(text) or int(text) > MAX_POSITION:
        raise BadRequestError(
            "Last-Event-ID must be an event id this gateway sent (a number of characters, 0 to 1000000000)",
            param="last-event-id",
        )
    return int(text)


@dataclass(frozen=True)
class ReplyProgress:
    """One step of a reply being followed: new text, and once it ended, how it ended."""

    delta: str = ""
    position: int = 0  # characters of the reply sent once this delta is (the event id)
    status: str | None = None  # None while in progress; then complete / incomplete / stopped / superseded
    finish_reason: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    keepalive: bool = False  # nothing new for a while: a comment keeps proxies from closing the stream


class TextFollower:
    """The part of a growing text a client does not have yet (it has the first `after` characters)."""

    def __init__(self, after: int = 0) -> None:
        self.sent = after

    def advance(self, text: str) -> str:
        """New characters since the last call (nothing when the text did not grow, or shrank on a stop)."""
        if len(text) <= self.sent:
            return ""
        delta, self.sent = text[self.sent :], len(text)
        return delta


def _chunk(completion_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    doc = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class OpenAiResumeEncoder:
    """A resumed reply as `chat.completion.chunk` events with ids, ending like the live stream ends."""

    def __init__(self, message_id: str, model: str, created: int) -> None:
        self.completion_id = "chatcmpl-" + message_id.removeprefix("msg_")
        self.model = model
        self.created = created
        self._started = False

    def encode(self, step: ReplyProgress) -> bytes:
        """The bytes for one step (the first one opens with the assistant role)."""
        if step.keepalive:
            return KEEPALIVE
        out = b""
        if not self._started:
            self._started = True
            out += b"id: %d\n" % (step.position - len(step.delta)) + self._make({"role": "assistant", "content": ""})
        if step.delta:
            out += b"id: %d\n" % step.position + self._make({"content": step.delta})
        if step.status is None:
            return out
        if step.status == "complete":
            if step.tool_calls:
                calls = [{"index": i, **call} for i, call in enumerate(step.tool_calls)]
                out += self._make({"tool_calls": calls})
            out += self._make({}, step.finish_reason or "stop")
        elif step.status == "incomplete":
            out += error_event("upstream_error", "the reply was cut off before it ended")
        return out + DONE

    def _make(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _chunk(self.completion_id, self.created, self.model, delta, finish)
