"""How a chat turn's reply is written to the client (pure): OpenAI SSE as relayed, or re-encoded for the AI SDK.

The turn runner (chat_turn.py) relays the provider's bytes unchanged on /v1/chat/completions. On /v1/chat it hands
each parsed chunk to a `LiveEncoder` (chat_turn.py's protocol) instead: the UI message stream (`UiTurnOutput`) or the
answer's text (`TextTurnOutput`); `TurnOutput` adds the response headers. `ProgressOutput` encodes a stored reply being followed (chat/resume.py's `ReplyProgress`) for
the reconnect route GET /v1/chat/{id}/stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from stream_app.chat.resume import KEEPALIVE, ReplyProgress
from stream_app.chat.ui_stream import (
    TEXT_STREAM_HEADERS,
    UI_STREAM_HEADERS,
    TextStreamEncoder,
    UiStreamEncoder,
    finish_reason,
)

CUT_OFF = "upstream_error: the reply was cut off before it ended"


class TurnOutput(Protocol):
    """One reply's bytes for the client, from upstream chunks and the turn's outcome (a LiveEncoder with headers)."""

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers."""
        ...

    def event(self, raw: bytes, chunk: dict[str, Any], position: int) -> bytes:
        """The bytes for one upstream chat.completion.chunk (`raw` its event, `position` the reply's length)."""
        ...

    def error(self, code: str, message: str) -> bytes:
        """A failure after the first byte (the stream ends after it)."""
        ...

    def end(self, status: str) -> bytes:
        """The stream's last bytes once the turn is stored: complete, stopped or incomplete."""
        ...


class UiTurnOutput:
    """The AI SDK's UI message stream (DefaultChatTransport)."""

    headers: Mapping[str, str] = UI_STREAM_HEADERS

    def __init__(self, encoder: UiStreamEncoder) -> None:
        self.encoder = encoder

    def event(self, raw: bytes, chunk: dict[str, Any], position: int) -> bytes:
        """The UI chunks for one upstream chunk (the first one opens the message)."""
        return self.encoder.feed(chunk)

    def error(self, code: str, message: str) -> bytes:
        """An `error` chunk (useChat's `error.message` is `code: message`), then `finish` and `[DONE]`."""
        return self.encoder.fail(f"{code}: {message}")

    def end(self, status: str) -> bytes:
        """`finish` (complete), `abort` + `finish` (stopped); an incomplete reply already sent its `error`."""
        if status == "stopped":
            return self.encoder.stop()
        if status == "complete":
            return self.encoder.finish()
        return self.encoder.fail(CUT_OFF)


class TextTurnOutput:
    """The answer's text only (TextStreamChatTransport): without framing a failure can only end the stream early."""

    headers: Mapping[str, str] = TEXT_STREAM_HEADERS

    def __init__(self) -> None:
        self.encoder = TextStreamEncoder()

    def event(self, raw: bytes, chunk: dict[str, Any], position: int) -> bytes:
        """Choice 0's text."""
        return self.encoder.feed(chunk)

    def error(self, code: str, message: str) -> bytes:
        """Nothing: the text transport has no way to carry an error inside the stream."""
        return b""

    def end(self, status: str) -> bytes:
        """Nothing: the body's end is the answer's end."""
        return b""


class ProgressOutput:
    """A stored reply followed while its turn writes it (GET /v1/chat/{id}/stream), replayed from its start.

    DefaultChatTransport treats a reconnect stream as a replay (its first `start` resets the client's copy of the
    message), so the first step carries all the checkpointed text.
    """

    def __init__(self, message_id: str, *, text_only: bool = False, metadata: Mapping[str, Any] | None = None) -> None:
        self.text_only = text_only
        self.ui = UiStreamEncoder(message_id, metadata=metadata)
        self.text = TextStreamEncoder()

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers of the chosen format."""
        return TEXT_STREAM_HEADERS if self.text_only else UI_STREAM_HEADERS

    def encode(self, step: ReplyProgress) -> bytes:
        """The bytes for one step; the last step (with a status) ends the stream."""
        if step.keepalive:
            return b"" if self.text_only else KEEPALIVE  # a comment would be text in the plain-text mode
        if self.text_only:
            return self.text.text_delta(step.delta)
        out = self.ui.text_delta(step.delta) if step.delta else self.ui.start()
        if step.status is None:
            return out
        if step.status == "complete":
            if step.tool_calls:
                calls = [{"index": i, **call} for i, call in enumerate(step.tool_calls)]
                choice = {
                    "index": 0,
                    "delta": {"tool_calls": calls},
                    "finish_reason": step.finish_reason or "tool_calls",
                }
                out += self.ui.feed({"choices": [choice]})
                return out + self.ui.finish()
            return out + self.ui.finish(reason=finish_reason(step.finish_reason or "stop"))
        if step.status == "stopped":
            return out + self.ui.stop()
        return out + self.ui.fail(CUT_OFF)
