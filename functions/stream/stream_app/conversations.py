"""A subject's conversations: listing, messages, delete, and the stop and resume routes of a turn in progress."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from sigstream.core.errors import BadRequestError
from sigstream.core.signed_url import CONVERSATION_PATTERN, Grant
from stream_app.adapters.history_store import HistoryStore
from stream_app.chat.resume import OpenAiResumeEncoder, parse_last_event_id
from stream_app.http_io import SSE_HEADERS, HttpResult, Request, empty_result, json_result
from stream_app.reply_follow import follow_reply

STOP_WAIT_SECONDS = 3.0  # how long the stop route waits for the turn to store its stopped reply

_LIMIT = re.compile(r"[0-9]{1,3}")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses


def _limit(request: Request) -> int:
    text = request.query.get("limit", "20")
    if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= 100:
        raise BadRequestError("limit must be an integer from 1 to 100", param="limit")
    return int(text)


def check_id(conversation_id: str) -> str:
    """Conversation ids are short URL-safe tokens."""
    if not CONVERSATION_PATTERN.fullmatch(conversation_id):
        raise BadRequestError("conversation id is malformed", param="conversation_id")
    return conversation_id


def list_conversations(request: Request, grant: Grant, store: HistoryStore) -> HttpResult:
    """GET /v1/conversations: newest first."""
    return json_result(200, store.list_conversations(grant.subject, _limit(request), request.query.get("after")))


def _include(request: Request) -> bool:
    value = request.query.get("include")
    if value not in (None, "superseded"):
        raise BadRequestError("include may only be superseded", param="include")
    return value == "superseded"


def list_messages(
    request: Request, grant: Grant, store: HistoryStore, conversation_id: str, now: float | None = None
) -> HttpResult:
    """GET /v1/conversations/{id}/messages: oldest first; `?include=superseded` adds replaced replies."""
    page = store.list_messages(
        check_id(conversation_id),
        grant.subject,
        _limit(request),
        request.query.get("after"),
        now=now if now is not None else time.time(),
        include_superseded=_include(request),
    )
    return json_result(200, page)


def delete_conversation(grant: Grant, store: HistoryStore, conversation_id: str) -> HttpResult:
    """DELETE /v1/conversations/{id}."""
    store.delete(check_id(conversation_id), grant.subject)
    return json_result(200, {"id": conversation_id, "object": "conversation.deleted", "deleted": True})


def _check_stop_body(request: Request) -> None:
    """The stop route reads no body: empty or `{}` (so nothing sent can name a field we would keep)."""
    if not request.body.strip():
        return
    try:
        doc = json.loads(request.body)
    except ValueError as exc:
        raise BadRequestError("the stop route takes no body (or {})", param="body") from exc
    if doc != {}:
        name = next(iter(doc), "body") if isinstance(doc, dict) else "body"
        shown = name if isinstance(name, str) and len(name) <= 40 and name.isprintable() else "body"
        raise BadRequestError(f"the stop route takes no body fields ({shown})", param=shown)


def stop_turn(
    request: Request,
    grant: Grant,
    store: HistoryStore,
    conversation_id: str,
    clock: Callable[[], float],
    sleep: Callable[[float], None] = time.sleep,
) -> HttpResult:
    """POST /v1/conversations/{id}/stop: ask the reply in progress to stop; answers once it is stored.

    `Last-Event-ID` (optional) is the last event the stopping client read: the stored reply keeps exactly that
    much text, so what a page showed when it aborted its fetch is what the history holds.
    """
    check_id(conversation_id)
    _check_stop_body(request)
    stop_at = parse_last_event_id(request.headers.get("last-event-id"))
    now = clock()
    live = store.request_stop(conversation_id, grant.subject, now=now, stop_at=stop_at)
    doc: dict[str, Any] = {"id": conversation_id, "object": "conversation.stop", "stopped": bool(live)}
    if not live:
        doc["message"] = None
        return json_result(200, doc)
    reply = live[0]
    deadline = now + STOP_WAIT_SECONDS
    while True:  # the turn notices within about a second, then writes its final status
        current = store.message_at(conversation_id, reply.seq)
        if current is None or current.status != "in_progress" or clock() >= deadline:
            break
        sleep(0.2)
    doc["message"] = current.public(clock()) if current is not None else None
    return json_result(200, doc)


def resume_stream(
    request: Request,
    grant: Grant,
    store: HistoryStore,
    conversation_id: str,
    clock: Callable[[], float],
    deadline: float | None = None,
) -> HttpResult:
    """GET /v1/conversations/{id}/stream: the reply in progress as OpenAI SSE (from Last-Event-ID); 204 if none."""
    check_id(conversation_id)
    after = parse_last_event_id(request.headers.get("last-event-id")) or 0
    reply = store.latest_live(conversation_id, grant.subject, clock())
    if reply is None:
        return empty_result(204)
    encoder = OpenAiResumeEncoder(reply.id, reply.model or "unknown", reply.created_at)
    steps = follow_reply(store, conversation_id, reply, after=after, clock=clock, deadline=deadline)
    return HttpResult(200, dict(SSE_HEADERS), (encoder.encode(step) for step in steps))
