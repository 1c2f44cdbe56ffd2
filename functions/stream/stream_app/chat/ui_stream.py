"""Encode OpenAI chat.completion.chunk dicts as the Vercel AI SDK's UI message stream (SSE) or as plain text.

The contract is the installed `ai` package's (docs/reference/ui-message-stream.md): every chunk emitted here validates
against `uiMessageChunkSchema` of ai 7 and ai 6, and readUIMessageStream rebuilds the text the provider sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stream_app.chat.sse import DONE, frame

UI_STREAM_HEADERS: Mapping[str, str] = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}
TEXT_STREAM_HEADERS: Mapping[str, str] = {
    "content-type": "text/plain; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}

StreamFormat = Literal["ui", "text"]

# OpenAI finish_reason -> the SDK's finishReason enum (ai 6 has no "interrupted", so a server-side stop is "other").
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
}


def stream_format(accept: str | None, query_format: str | None = None) -> StreamFormat:
    """`text` for TextStreamChatTransport (`Accept: text/plain` or `?format=text`), else the UI message stream."""
    if query_format is not None:
        return "text" if query_format.strip().lower() == "text" else "ui"
    media = [item.split(";")[0].strip().lower() for item in (accept or "").split(",")]
    return "text" if "text/plain" in media and "text/event-stream" not in media else "ui"


def finish_reason(openai_reason: str | None, *, refused: bool = False) -> str:
    """The SDK finishReason for an OpenAI finish_reason (a refusal is content-filter, as @ai-sdk/openai maps it)."""
    if openai_reason == "stop" and refused:
        return "content-filter"
    return _FINISH_REASONS.get(openai_reason or "", "other")


@dataclass
class _ToolCall:
    call_id: str
    name: str
    arguments: str = ""
    started: bool = False
    closed: bool = False


class UiStreamEncoder:
    """One assistant message as UI message stream SSE: feed upstream chunks, get the bytes to send, in order."""

    def __init__(
        self, message_id: str, *, metadata: Mapping[str, Any] | None = None, dynamic_tools: bool = False
    ) -> None:
        self.message_id = message_id
        self._metadata = dict(metadata) if metadata else None
        self._dynamic = dynamic_tools
        self._started = False
        self._ended = False
        self._text_id: str | None = None
        self._reasoning_id: str | None = None
        self._parts = 0
        self._calls: dict[int, _ToolCall] = {}
        self._refused = False
        self._openai_finish: str | None = None
        self.text = ""
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None

    @classmethod
    def resume(
        cls, message_id: str, text: str, *, metadata: Mapping[str, Any] | None = None
    ) -> tuple[UiStreamEncoder, bytes]:
        """An encoder for a reply already in progress, and the bytes that replay its checkpointed text.

        DefaultChatTransport treats a reconnect stream as a replay (`resumeStreamIsReplay`): the first `start` resets
        the client's message, so the stream repeats the stored text before any new delta.
        """
        encoder = cls(message_id, metadata=metadata)
        return encoder, encoder.start() + encoder.text_delta(text)

    @property
    def started(self) -> bool:
        """Whether the first byte has gone out (after it, failures are `error` chunks, not HTTP statuses)."""
        return self._started

    @property
    def ended(self) -> bool:
        """Whether `[DONE]` has been emitted."""
        return self._ended

    def start(self) -> bytes:
        """`start` (messageId, metadata) and `start-step`; emitted once, implicitly by the first delta if not called."""
        if self._started:
            return b""
        self._started = True
        start: dict[str, Any] = {"type": "start", "messageId": self.message_id}
        if self._metadata:
            start["messageMetadata"] = self._metadata
        return frame(start) + frame({"type": "start-step"})

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """The bytes for one upstream chat.completion.chunk (choice 0; other choices are not part of the message)."""
        if self._ended:
            return b""
        if isinstance(chunk.get("error"), Mapping):
            return self.fail("The provider reported an error while streaming.")
        out = self.start()
        self.model = chunk.get("model") or self.model
        if isinstance(chunk.get("usage"), Mapping):
            self.usage = dict(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                out += self._delta(delta)
            if choice.get("finish_reason"):
                self._openai_finish = str(choice["finish_reason"])
        return out

    def text_delta(self, text: str) -> bytes:
        """Text that did not come as a chunk (a checkpoint being replayed, or new text read back from the store)."""
        if self._ended:
            return b""
        out = self.start()
        if text:
            out += self._text(text)
        return out

    def finish(self, *, metadata: Mapping[str, Any] | None = None, reason: str | None = None) -> bytes:
        """Close the message: open parts end, tool inputs become available, `finish-step`, `finish`, `[DONE]`.

        A tool call's input is announced only here, once the reply is complete: a cut or stopped reply is stored
        without its tool calls, so a call the page could run (useChat's onToolCall) would have no stored call.
        """
        if self._ended:
            return b""
        out = self.start() + self._close_parts() + self._close_tool_calls()
        end: dict[str, Any] = {
            "type": "finish",
            "finishReason": reason or finish_reason(self._openai_finish, refused=self._refused),
        }
        end_metadata = self._finish_metadata(metadata)
        if end_metadata:
            end["messageMetadata"] = end_metadata
        self._ended = True
        return out + frame({"type": "finish-step"}) + frame(end) + DONE

    def stop(self, *, metadata: Mapping[str, Any] | None = None) -> bytes:
        """End after a stop request: open parts end, `abort`, then `finish` with finishReason `other`, `[DONE]`."""
        if self._ended:
            return b""
        out = (
            self.start()
            + self._close_parts()
            + frame({"type": "finish-step"})
            + frame({"type": "abort", "reason": "stopped"})
        )
        end: dict[str, Any] = {"type": "finish", "finishReason": "other"}
        end["messageMetadata"] = {**self._finish_metadata(metadata), "status": "stopped"}
        self._ended = True
        return out + frame(end) + DONE

    def fail(self, error_text: str, *, metadata: Mapping[str, Any] | None = None) -> bytes:
        """A failure after the first byte: open parts end, an `error` chunk (useChat's `error`), `finish`, `[DONE]`."""
        if self._ended:
            return b""
        out = self.start() + self._close_parts()
        end: dict[str, Any] = {"type": "finish", "finishReason": "error"}
        end_metadata = self._finish_metadata(metadata)
        if end_metadata:
            end["messageMetadata"] = end_metadata
        self._ended = True
        return (
            out + frame({"type": "error", "errorText": error_text}) + frame({"type": "finish-step"}) + frame(end) + DONE
        )

    def tool_calls(self) -> list[dict[str, Any]]:
        """The reply's tool calls in the OpenAI assistant-message shape (for the history the integrator stores)."""
        return [
            {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for _, call in sorted(self._calls.items())
        ]

    def _finish_metadata(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.usage is not None:
            out["usage"] = self.usage
        if self.model:
            out["model"] = self.model
        return {**out, **(extra or {})}

    def _next_id(self, kind: str) -> str:
        part_id = f"{kind}-{self._parts}"
        self._parts += 1
        return part_id

    def _delta(self, delta: Mapping[str, Any]) -> bytes:
        out = b""
        for key in ("reasoning_content", "reasoning"):  # OpenAI-compatible providers that stream their reasoning
            value = delta.get(key)
            if isinstance(value, str) and value:
                out += self._reasoning(value)
        content, refusal = delta.get("content"), delta.get("refusal")
        if isinstance(content, str) and content:
            out += self._text(content)
        if isinstance(refusal, str) and refusal:  # shown as text, as the SDK's own OpenAI provider does
            self._refused = True
            out += self._text(refusal)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, Mapping):
                    out += self._tool_delta(call)
        return out

    def _reasoning(self, text: str) -> bytes:
        out = b""
        if self._reasoning_id is None:
            self._reasoning_id = self._next_id("reasoning")
            out += frame({"type": "reasoning-start", "id": self._reasoning_id})
        return out + frame({"type": "reasoning-delta", "id": self._reasoning_id, "delta": text})

    def _text(self, text: str) -> bytes:
        out = self._end_reasoning()
        if self._text_id is None:
            self._text_id = self._next_id("text")
            out += frame({"type": "text-start", "id": self._text_id})
        self.text += text
        return out + frame({"type": "text-delta", "id": self._text_id, "delta": text})

    def _tool_delta(self, call: Mapping[str, Any]) -> bytes:
        index = call.get("index", len(self._calls))
        index = index if isinstance(index, int) and not isinstance(index, bool) else len(self._calls)
        raw_function = call.get("function")
        function: Mapping[str, Any] = raw_function if isinstance(raw_function, Mapping) else {}
        slot = self._calls.get(index)
        if slot is None:
            call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
            slot = self._calls[index] = _ToolCall(call_id or f"call_{index}_{self.message_id}"[:40], "")
        if slot.closed:
            return b""
        name, arguments = function.get("name"), function.get("arguments")
        if isinstance(name, str) and not slot.started:
            slot.name += name
        out = b""
        if not slot.started and slot.name:
            slot.started = True
            start: dict[str, Any] = {"type": "tool-input-start", "toolCallId": slot.call_id, "toolName": slot.name}
            if self._dynamic:
                start["dynamic"] = True
            out += frame(start)
            if slot.arguments:  # arguments that arrived before the name
                out += frame({"type": "tool-input-delta", "toolCallId": slot.call_id, "inputTextDelta": slot.arguments})
        if isinstance(arguments, str) and arguments:
            slot.arguments += arguments
            if slot.started:
                out += frame({"type": "tool-input-delta", "toolCallId": slot.call_id, "inputTextDelta": arguments})
        return out

    def _close_tool_calls(self) -> bytes:
        out = b""
        for _, slot in sorted(self._calls.items()):
            if slot.closed:
                continue
            slot.closed = True
            if not slot.started:  # a call without a name cannot become a tool part
                continue
            extra: dict[str, Any] = {"dynamic": True} if self._dynamic else {}
            try:
                value = json.loads(slot.arguments or "{}")
            except ValueError:
                value = None
            if isinstance(value, dict):
                out += frame(
                    {
                        "type": "tool-input-available",
                        "toolCallId": slot.call_id,
                        "toolName": slot.name,
                        "input": value,
                        **extra,
                    }
                )
            else:
                out += frame(
                    {
                        "type": "tool-input-error",
                        "toolCallId": slot.call_id,
                        "toolName": slot.name,
                        "input": slot.arguments,
                        "errorText": "The model's tool arguments are not a JSON object.",
                        **extra,
                    }
                )
        return out

    def _end_reasoning(self) -> bytes:
        if self._reasoning_id is None:
            return b""
        part_id, self._reasoning_id = self._reasoning_id, None
        return frame({"type": "reasoning-end", "id": part_id})

    def _close_parts(self) -> bytes:
        out = self._end_reasoning()
        if self._text_id is not None:
            out += frame({"type": "text-end", "id": self._text_id})
            self._text_id = None
        return out


class TextStreamEncoder:
    """The answer's text only, for TextStreamChatTransport: no framing, so a failure can only end the stream."""

    def __init__(self) -> None:
        self.text = ""

    @staticmethod
    def resume(text: str) -> tuple[TextStreamEncoder, bytes]:
        """An encoder whose first bytes are the checkpointed text."""
        encoder = TextStreamEncoder()
        return encoder, encoder.text_delta(text)

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """Choice 0's content (and refusal) text from one chat.completion.chunk, UTF-8."""
        out = ""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                for key in ("content", "refusal"):
                    value = delta.get(key)
                    if isinstance(value, str):
                        out += value
        return self.text_delta(out)

    def text_delta(self, text: str) -> bytes:
        """Raw text that did not come as a chunk (a replayed checkpoint, new text from the store)."""
        self.text += text
        return text.encode("utf-8", "replace")
