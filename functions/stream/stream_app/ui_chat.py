"""The Vercel AI SDK's routes: POST /v1/chat (useChat's transports) and GET /v1/chat/{id}/stream (its reconnect).

A useChat body (`{id, messages: UIMessage[], trigger, messageId, ...}`) becomes a chat-completions request and runs
as any turn (chat_turn.py: history merge, in-progress reply, stop, summary); only the reply's encoding differs: the
UI message stream, or plain text for TextStreamChatTransport (docs/reference/ui-message-stream.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from sigstream.core.errors import BadRequestError, HistoryConflictError, NotFoundError, SigstreamError
from sigstream.core.signed_url import Grant
from stream_app.adapters.history_store import HistoryStore
from stream_app.chat.history_merge import Merge
from stream_app.chat.request import parse_chat_request, parse_json_body
from stream_app.chat.turn_output import ProgressOutput, TextTurnOutput, TurnOutput, UiTurnOutput
from stream_app.chat.ui_messages import UiChatBody, name_ui_messages, parse_ui_chat_body, response_message_id
from stream_app.chat.ui_stream import UiStreamEncoder, stream_format
from stream_app.chat_turn import ChatDeps, chat_turn
from stream_app.conversations import check_id
from stream_app.http_io import HttpResult, Request, empty_result
from stream_app.reply_follow import follow_reply

# Keys of the useChat body that the turn sets itself: a client's value would be ignored silently, so it is refused.
_SERVER_SET = ("stream", "stream_options")


def _body(request: Request, grant: Grant) -> UiChatBody:
    doc = parse_json_body(request.body, request.headers.get("content-type", ""))
    body = parse_ui_chat_body(doc)
    for name in _SERVER_SET:
        if name in body.params:
            raise BadRequestError(f"{name} is set by the gateway on /v1/chat (the answer always streams)", param=name)
    last = body.turns[-1]
    if (
        body.trigger == "submit-message"
        and body.message_id is not None
        and (last.role, last.id) == ("user", body.message_id)
    ):
        # sendMessage({messageId}) replaces a sent user message and everything after it: the stored history would
        # keep the old turn in front of the new one, so the provider would see what the page no longer shows.
        raise HistoryConflictError(
            "editing a sent message (sendMessage with messageId) is not supported; regenerate the reply or start a "
            "new chat",
            param="messageId",
        )
    if grant.conversation_id and body.chat_id is not None and body.chat_id != grant.conversation_id:
        raise BadRequestError(
            "id names another chat than the conversation this URL is signed for: give useChat the conversation id "
            "the signed URL was issued with (useChat({id}))",
            param="id",
        )
    return body


def _messages(body: UiChatBody, conversation: bool) -> tuple[list[dict[str, Any]], list[int]]:
    """The chat-completions messages and each one's UI message index; an empty assistant message stays (empty).

    On a conversation only: a reply stopped before its first token is stored with empty text; the SDK's conversion
    drops such a message, and the resent history would then skip a stored message (and be taken for new messages,
    repeating the user's).
    """
    out: list[dict[str, Any]] = []
    owners: list[int] = []
    for index, turn in enumerate(body.turns):
        messages = list(turn.openai)
        if conversation and turn.role == "assistant" and not messages:
            messages = [{"role": "assistant", "content": ""}]
        out.extend(messages)
        owners.extend([index] * len(messages))
    return out, owners


def _check_merge(body: UiChatBody, merge: Merge) -> None:
    """Refuse a merge the request's trigger does not mean (useChat always resends the whole conversation).

    `submit-message` must resend the stored history (then new messages); `regenerate-message` must send it up to
    its last user message. "Only new messages" after a stored history is then a page that did not load it (the
    next request would conflict anyway), or a regenerate of an earlier reply: refused now, with the reason.
    """
    if merge.base == 0:
        return  # nothing stored before these messages: a new chat (or one whose first turn failed)
    if body.trigger == "regenerate-message" and merge.kind != "regenerate":
        raise HistoryConflictError(
            "regenerate-message must send the stored history up to its last user message (only the last reply "
            "can be regenerated)",
            param="messages",
        )
    if body.trigger == "submit-message" and merge.kind != "resent":
        raise HistoryConflictError(
            "submit-message must resend the stored history before the new message: give useChat the stored "
            "messages (GET /v1/conversations/{id}/messages) as its initial messages",
            param="messages",
        )


def ui_chat_turn(request: Request, grant: Grant, deps: ChatDeps, deadline: float | None = None) -> HttpResult:
    """POST /v1/chat: a useChat request, answered as a UI message stream (or text with `Accept: text/plain`)."""
    body = _body(request, grant)
    text_only = stream_format(request.headers.get("accept"), request.query.get("format")) == "text"
    messages, owners = _messages(body, bool(grant.conversation_id))
    doc = {
        **body.params,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},  # usage goes to the client as the finish chunk's metadata
    }
    try:
        chat = parse_chat_request(
            json.dumps(doc).encode(), "application/json", grant, deps.policy, raw_body=request.body
        )
    except SigstreamError as exc:
        name_ui_messages(exc, owners)
        raise
    metadata = {"conversationId": grant.conversation_id} if grant.conversation_id else None

    def output(reply_id: str | None) -> TurnOutput:
        if text_only:
            return TextTurnOutput()
        message_id = response_message_id(body, reply_id or "msg_" + uuid.uuid4().hex[:24])
        return UiTurnOutput(UiStreamEncoder(message_id, metadata=metadata))

    made: list[TurnOutput] = []

    def encoder(reply_id: str | None) -> TurnOutput:
        made.append(output(reply_id))
        return made[0]

    try:
        result = chat_turn(
            request, grant, deps, deadline, encoder=encoder, chat=chat, check_merge=lambda m: _check_merge(body, m)
        )
    except SigstreamError as exc:  # before the first byte: the page's own message index, not the provider's
        name_ui_messages(exc, owners)
        raise
    if made:  # the turn answers (errors before the first byte were raised as JSON statuses)
        result.headers = dict(made[0].headers)
    return result


def ui_resume_stream(
    request: Request,
    grant: Grant,
    store: HistoryStore,
    conversation_id: str,
    clock: Callable[[], float],
    deadline: float | None = None,
) -> HttpResult:
    """GET /v1/chat/{id}/stream: the reply in progress replayed from its start, then followed; 204 when none.

    Also 204 for a conversation that does not exist (yet, or for this subject): useChat treats anything else as an
    error on a new chat's page load, and a 404 would say no more than the 204 does.
    """
    check_id(conversation_id)
    text_only = stream_format(request.headers.get("accept"), request.query.get("format")) == "text"
    try:
        reply = store.latest_live(conversation_id, grant.subject, clock())
    except NotFoundError:  # a new chat: useChat({resume: true}) reconnects on mount before its first message
        reply = None
    if reply is None:
        return empty_result(204)
    output = ProgressOutput(reply.id, text_only=text_only, metadata={"conversationId": conversation_id})
    steps = follow_reply(store, conversation_id, reply, after=0, clock=clock, deadline=deadline)
    return HttpResult(200, dict(output.headers), (output.encode(step) for step in steps))
