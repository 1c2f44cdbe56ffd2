"""Choose which stored messages go back to the model: the newest ones within a message and token budget."""

from __future__ import annotations

from collections.abc import Sequence

from stream_app.chat.messages import Message


def select_window(
    history: Sequence[Message],
    *,
    max_messages: int,
    token_budget: int,
    summary: str | None = None,
) -> list[Message]:
    """The newest messages (oldest first) that fit; never starts on an orphaned tool result."""
    chosen: list[Message] = []
    used = 0
    for message in reversed(history):
        cost = message.estimated_tokens()
        if len(chosen) >= max_messages or (chosen and used + cost > token_budget):
            break
        chosen.append(message)
        used += cost
    chosen.reverse()
    while chosen and chosen[0].role == "tool":
        chosen.pop(0)  # its assistant tool_calls message fell outside the window
    if summary:
        chosen.insert(0, Message("system", f"Summary of the earlier conversation: {summary}"))
    return chosen
