"""Accumulate an assistant reply from chat.completion.chunk events, as they stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """The assistant's reply so far (choice 0), with tool calls, finish reason and usage."""

    content: str = ""
    refusal: str = ""
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    chunks: int = 0

    def add_chunk(self, chunk: dict[str, Any]) -> None:
        """Merge one chunk's delta."""
        self.chunks += 1
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            self.content += delta.get("content") or ""
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
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def add_completion(self, completion: dict[str, Any]) -> None:
        """Take a whole (non-streamed) chat.completion."""
        self.model = completion.get("model")
        self.usage = completion.get("usage")
        choices = completion.get("choices") or [{}]
        message = choices[0].get("message") or {}
        self.content = message.get("content") or ""
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
