"""Reconcile a request's messages with the stored history of its conversation (pure: values in, a decision out).

The stored history is authoritative. A request on a conversation URL may carry only its new message(s), the whole
history again with new messages at the end (openai-python, openai-node `runTools`, the AI SDK), or the history up
to its last user message (a regenerate). Messages are compared in their normalised form (`Message.normalised`:
one text part is a string, empty assistant content beside tool calls is null, and tool-call arguments that are
JSON are compared as compact, key-sorted JSON with numbers as JavaScript reads them, because the AI SDK resends `JSON.stringify` of the arguments it
parsed, not the provider's bytes; the stored text stays what the provider sent). Rules and their order, and the
ambiguous cases, are in docs/adr/0009-conversation-turns.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sigstream.core.errors import ConflictError, HistoryConflictError
from stream_app.chat.messages import Message

MergeKind = Literal["only_new", "resent", "regenerate"]
_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name", "refusal")


@dataclass(frozen=True)
class Entry:
    """A stored message of the active history: its id, the message, and whether a turn is still writing it."""

    id: str
    message: Message
    live: bool = False  # an assistant reply in progress (its lease not yet run out)


@dataclass(frozen=True)
class Merge:
    """What the request means: the messages to store and send after the history, and the replies it replaces."""

    kind: MergeKind
    new: tuple[Message, ...]
    base: int  # how many stored messages stay in front of the new ones (the window is chosen from these)
    superseded: tuple[str, ...] = ()  # ids of the stored reply a regenerate replaces
    continues_tool_call: bool = False  # the new messages begin with results of the stored reply's tool calls


def _shown_part_of(stored: Message, sent: Message) -> bool:
    """A resent assistant text that is the start of the stored reply: the client saw less than was stored.

    A client that stopped reading (useChat's stop() without the stop route, a dropped connection) keeps the text
    it had shown while the turn ran on and was stored whole; it resends that part. The stored reply stays what
    the history holds (it is authoritative), so the client is not stuck with a 409 until it reloads.
    """
    return (
        stored.role == "assistant"
        and isinstance(stored.content, str)
        and isinstance(sent.content, str)
        and stored.content.startswith(sent.content)
    )


def difference(stored: Message, sent: Message) -> str | None:
    """The first field in which two messages differ once normalised, or None when a provider cannot tell them apart."""
    a, b = stored.normalised(), sent.normalised()
    for name in _FIELDS:
        if getattr(a, name) != getattr(b, name) and not (name == "content" and _shown_part_of(a, b)):
            return name
    return None


def _pending_calls(history: Sequence[Message]) -> set[str]:
    """Tool-call ids of the last assistant message still waiting for their results at the end of `history`."""
    pending: set[str] = set()
    for message in history:
        if message.role == "assistant":
            pending = {call.id for call in message.tool_calls}
        elif message.role == "tool":
            pending.discard(message.tool_call_id or "")
        else:
            pending = set()
    return pending


def _check_tool_results(history: Sequence[Message], new: Sequence[Message], offset: int) -> bool:
    """Every tool message answers a call still pending at its place; returns whether `new` starts with one."""
    pending = _pending_calls(history)
    for index, message in enumerate(new):
        if message.role == "tool":
            if message.tool_call_id not in pending:
                where = f"messages[{index + offset}]"
                raise HistoryConflictError(
                    f"{where} is the result of tool call {message.tool_call_id}, which no stored or sent assistant "
                    "message is waiting for",
                    param=f"{where}.tool_call_id",
                )
            pending.discard(message.tool_call_id)
        elif message.role == "assistant":
            pending = {call.id for call in message.tool_calls}
        else:
            pending = set()
    return bool(new) and new[0].role == "tool"


def _matches(stored: Sequence[Entry], sent: Sequence[Message]) -> bool:
    return len(stored) <= len(sent) and all(
        difference(e.message, m) is None for e, m in zip(stored, sent, strict=False)
    )


def _leading_instructions(stored: Sequence[Entry], sent: Sequence[Message]) -> int:
    """How many leading system/developer messages of `sent` repeat the stored history's own leading ones."""
    count = 0
    for entry, message in zip(stored, sent, strict=False):
        if message.role not in ("system", "developer") or difference(entry.message, message) is not None:
            break
        count += 1
    return count


def _conflict(stored: Sequence[Entry], sent: Sequence[Message], complete: bool) -> HistoryConflictError:
    """A 409 that says where the request and the stored history part ways."""
    if not complete:
        return HistoryConflictError(
            f"the request's messages hold assistant messages but do not begin with the stored history (which is "
            f"longer than the {len(sent)} messages sent); send only the new messages",
            param="messages",
        )
    for index, (entry, message) in enumerate(zip(stored, sent, strict=False)):
        field = difference(entry.message, message)
        if field is not None:
            where = f"messages[{index}]"
            detail = (
                f"its role is {message.role}, the stored message's is {entry.message.role}"
                if field == "role"
                else f"its {field} differs from the stored {entry.message.role} message's"
            )
            return HistoryConflictError(
                f"{where} does not match stored message {index}: {detail}; send the stored history unchanged "
                "followed by the new messages, or only the new messages",
                param=f"{where}.{field}",
            )
    return HistoryConflictError(
        f"the request holds the first {len(sent)} of the {len(stored)} stored messages and ends with an assistant "
        "message; to regenerate a reply send the history up to its user message, else only the new messages",
        param="messages",
    )


def merge_history(stored: Sequence[Entry], sent: Sequence[Message], *, complete: bool = True) -> Merge:
    """Decide what a request on a conversation URL means; raises HistoryConflictError (409) when it means nothing.

    `stored` is the active history, oldest first (superseded replies left out); `complete` says whether it is all
    of it (False: only its newest messages were read, so the request cannot be a resend of all of it).
    In order: the stored history resent with new messages after it; the history up to the last user message (a
    regenerate of the reply after it), or up to a tool loop's last tool result (a regenerate of the reply after
    those results); new messages only (no assistant message among them, tool results only for
    pending calls, a repeat of the stored leading system prompt dropped); anything else is a conflict.
    """
    messages = tuple(sent)
    if not stored:
        return Merge("only_new", messages, 0, continues_tool_call=_check_tool_results((), messages, 0))
    history = [e.message for e in stored]
    size = len(stored)
    if complete and _matches(stored, messages):
        new = messages[size:]
        if not new:
            raise HistoryConflictError(
                "the request repeats the stored history and adds no new message", param="messages"
            )
        continues = _check_tool_results(history, new, size)
        return Merge("resent", new, size, continues_tool_call=continues)
    last_user = max((i for i, m in enumerate(history) if m.role == "user"), default=-1)
    if (
        complete
        and 0 <= last_user < size - 1
        and len(messages) == last_user + 1
        and _matches(stored[: last_user + 1], messages)
    ):
        block = stored[last_user + 1 :]
        if any(e.live for e in block):
            raise ConflictError("the reply to regenerate is still being written; stop it first")
        return Merge("regenerate", (), last_user + 1, superseded=tuple(e.id for e in block))
    if (
        complete
        and size >= 2
        and history[-1].role == "assistant"
        and history[-2].role == "tool"
        and len(messages) == size - 1
        and _matches(stored[:-1], messages)
    ):  # a tool loop's last step again (an SDK retrying it): only the reply after the tool results is replaced
        if stored[-1].live:
            raise ConflictError("the reply to regenerate is still being written; stop it first")
        return Merge("regenerate", (), size - 1, superseded=(stored[-1].id,))
    if not any(m.role == "assistant" for m in messages):
        skip = _leading_instructions(stored, messages) if complete else 0
        new = messages[skip:]
        if not new:
            raise HistoryConflictError(
                "the request repeats the stored instructions and adds no new message", param="messages"
            )
        continues = _check_tool_results(history, new, skip)
        return Merge("only_new", new, size, continues_tool_call=continues)
    raise _conflict(stored, messages, complete)
