"""Choose which stored messages go back to the model: the newest ones within a message and token budget."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

PROMPT_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name", "refusal")


def estimate_tokens(message: dict[str, Any]) -> int:
    """A cheap token estimate (about four characters per token, plus per-message overhead)."""
    text = message.get("content")
    size = len(text) if isinstance(text, str) else len(json.dumps(text or ""))
    if message.get("tool_calls"):
        size += len(json.dumps(message["tool_calls"]))
    return size // 4 + 4


def select_window(
    history: Sequence[dict[str, Any]],
    *,
    max_messages: int,
    token_budget: int,
    summary: str | None = None,
) -> list[dict[str, Any]]:
    """The newest messages (oldest first) that fit; never starts on an orphaned tool result."""
    chosen: list[dict[str, Any]] = []
    used = 0
    for message in reversed(history):
        cost = estimate_tokens(message)
        if len(chosen) >= max_messages or (chosen and used + cost > token_budget):
            break
        chosen.append(message)
        used += cost
    chosen.reverse()
    while chosen and chosen[0].get("role") == "tool":
        chosen.pop(0)  # its assistant tool_calls message fell outside the window
    window = [{k: m[k] for k in PROMPT_FIELDS if m.get(k) is not None} for m in chosen]
    for message in window:
        message.setdefault("content", None)
    if summary:
        window.insert(0, {"role": "system", "content": f"Summary of the earlier conversation: {summary}"})
    return window
