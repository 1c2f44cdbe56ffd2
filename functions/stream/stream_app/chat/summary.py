"""The rolling summary: which messages it must take in, the provider request that writes it, its answer (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stream_app.chat.messages import Message

INSTRUCTIONS = (
    "You maintain a running summary of a conversation between a user and an assistant, so the assistant can "
    "continue it without the older messages. Merge the summary so far with the new messages into one concise "
    "summary in the conversation's language: facts, names, numbers, decisions, open questions and preferences "
    "the user stated. Write only the summary."
)
MAX_MESSAGE_CHARS = 4000  # of each message, in the transcript the summariser reads
MAX_SUMMARY_CHARS = 8000  # what is kept of the summariser's answer


@dataclass(frozen=True)
class SummaryPlan:
    """Messages that dropped out of the window and are not in the summary yet, up to sequence number `through`."""

    previous: str | None
    messages: tuple[Message, ...]
    through: int


def plan_summary(
    history: Sequence[tuple[int, Message]], window_start: int, *, summary: str | None, summary_through: int
) -> SummaryPlan | None:
    """What the summary must take in once the window begins at `window_start` of `history` ((seq, message) pairs)."""
    dropped = history[:window_start]
    fresh = tuple(message for seq, message in dropped if seq > summary_through)
    if not fresh:
        return None
    return SummaryPlan(summary, fresh, max(seq for seq, _ in dropped))


def _line(message: Message) -> str:
    text = message.text() or message.refusal or ""
    calls = "; ".join(f"called {c.name}({c.arguments[:200]})" for c in message.tool_calls)
    body = " ".join(part for part in (text[:MAX_MESSAGE_CHARS], calls) if part)
    return f"{message.role}: {body}"


def summary_request(plan: SummaryPlan, *, model: str, max_tokens: int, tokens_parameter: str) -> dict[str, Any]:
    """The non-streaming chat-completions request that writes the new summary."""
    transcript = "\n".join(_line(m) for m in plan.messages)
    earlier = f"Summary so far:\n{plan.previous}\n\n" if plan.previous else ""
    return {
        "model": model,
        "stream": False,
        tokens_parameter: max_tokens,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"{earlier}New messages:\n{transcript}"},
        ],
    }


def summary_answer(completion: dict[str, Any]) -> tuple[str | None, int]:
    """The summary text (None when the answer holds none) and the tokens the call used."""
    usage = completion.get("usage") if isinstance(completion.get("usage"), dict) else {}
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    tokens = total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else 0
    choices = completion.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = first.get("message") if isinstance(first.get("message"), dict) else {}
    content = message.get("content") if isinstance(message, dict) else None
    text = content.strip()[:MAX_SUMMARY_CHARS] if isinstance(content, str) else ""
    return (text or None), tokens
