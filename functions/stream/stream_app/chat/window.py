"""Choose which stored messages go back to the model, and make any sequence one a provider accepts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from stream_app.chat.messages import Message

SUMMARY_PREFIX = "Summary of the earlier conversation: "


def window_start(history: Sequence[Message], *, max_messages: int, token_budget: int) -> int:
    """Where the window of the newest messages that fit begins (an index into `history`).

    The newest message fits even beyond the budget when it is part of a tool loop (a call, or a result the
    provider needs with it); any other message over the budget stays out, so one huge reply does not make every
    later turn huge (the rolling summary takes it in). The window never begins on a tool result: its assistant
    message (with the tool calls) fell outside, so the whole group stays out and a tool call is never split from
    its results.
    """
    start, used = len(history), 0
    for index in range(len(history) - 1, -1, -1):
        message = history[index]
        cost = message.estimated_tokens()
        in_loop = message.role == "tool" or bool(message.tool_calls)
        over_budget = used + cost > token_budget and (start < len(history) or not in_loop)
        if len(history) - index > max_messages or over_budget:
            break
        start, used = index, used + cost
    while start < len(history) and history[start].role == "tool":
        start += 1
    return start


def summary_message(summary: str) -> Message:
    """The rolling summary as the system message that opens a window."""
    return Message("system", SUMMARY_PREFIX + summary)


def select_window(
    history: Sequence[Message],
    *,
    max_messages: int,
    token_budget: int,
    summary: str | None = None,
) -> list[Message]:
    """The newest messages (oldest first) that fit, after the summary of older ones when some were left out."""
    start = window_start(history, max_messages=max_messages, token_budget=token_budget)
    chosen = list(history[start:])
    if summary and start > 0:
        chosen.insert(0, summary_message(summary))
    return chosen


def provider_sequence(messages: Sequence[Message]) -> list[Message]:
    """The messages with every tool call answered and every tool result answering one (what providers accept).

    A stored reply's tool calls stay unanswered when a client abandons the tool loop (or a tool result arrives
    for a call that is no longer there): the unanswered calls are left out of the assistant message, the message
    itself when nothing else is left of it, and so are results that answer nothing.
    """
    out: list[Message] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        index += 1
        if message.role == "tool":
            continue  # not after an assistant message's calls (those are taken with it below)
        if message.role != "assistant" or not message.tool_calls:
            out.append(message)
            continue
        results: list[Message] = []
        while index < len(messages) and messages[index].role == "tool":
            results.append(messages[index])
            index += 1
        ids = {call.id for call in message.tool_calls}
        answered = {r.tool_call_id for r in results if r.tool_call_id in ids}
        calls = tuple(call for call in message.tool_calls if call.id in answered)
        if calls:
            out.append(replace(message, tool_calls=calls))
        elif message.content or message.refusal:
            out.append(replace(message, tool_calls=()))
        seen: set[str] = set()
        for result in results:
            if result.tool_call_id in answered and result.tool_call_id not in seen:
                seen.add(result.tool_call_id or "")
                out.append(result)
    return out
