"""Accumulate an assistant reply from chat.completion.chunk events, as they stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """The assistant's reply so far (choice 0), with tool calls, finish reason and usage."""

    parts: list[str] = field(default_factory=list)  # content pieces: joined once, not copied per chunk
    refusal: str = ""
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    chunks: int = 0
    chars: int = 0  # characters of content so far: the position that event ids name

    def text_so_far(self) -> str:
        """The content so far, safe to call from another thread while chunks are added (it changes nothing)."""
        return "".join(self.parts[:])

    @property
    def content(self) -> str:
        """The content so far."""
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def add_chunk(self, chunk: dict[str, Any]) -> None:
        """Merge one chunk's delta (tool calls and refusals are looked at only when the delta has them)."""
        self.chunks += 1
        model = chunk.get("model")
        if model:
            self.model = model
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content and isinstance(content, str):
                self.parts.append(content)
                self.chars += len(content)
            if len(delta) > 1 or content is None:
                self._add_other(delta)
            finish = choice.get("finish_reason")
            if finish:
                self.finish_reason = finish

    def _add_other(self, delta: dict[str, Any]) -> None:
        self.refusal += delta.get("refusal") or ""
        for call in delta.get("tool_calls") or []:
            slot = self.tool_calls.setdefault(
                int(call.get("index", 0)), {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            slot["id"] = call.get("id") or slot["id"]
            slot["type"] = call.get("type") or slot["type"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""

    def add_completion(self, completion: dict[str, Any]) -> None:
        """Take a whole (non-streamed) chat.completion."""
        self.model = completion.get("model")
        self.usage = completion.get("usage")
        choices = completion.get("choices") or [{}]
        message = choices[0].get("message") or {}
        content = message.get("content")
        self.parts = [content] if isinstance(content, str) and content else []
        self.refusal = message.get("refusal") or ""
        self.tool_calls = dict(enumerate(message.get("tool_calls") or []))
        self.finish_reason = choices[0].get("finish_reason")

    def message(self) -> dict[str, Any]:
        """The reply as an OpenAI assistant message (what the next turn sends back)."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            msg["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.refusal:
            msg["refusal"] = self.refusal
        return msg
