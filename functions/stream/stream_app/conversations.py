"""GET/DELETE on a subject's conversations and their messages."""

from __future__ import annotations

import re

from sigstream.core.errors import BadRequestError
from sigstream.core.signed_url import CONVERSATION_PATTERN, Grant
from stream_app.adapters.history_store import HistoryStore
from stream_app.http_io import HttpResult, Request, json_result

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


def list_messages(request: Request, grant: Grant, store: HistoryStore, conversation_id: str) -> HttpResult:
    """GET /v1/conversations/{id}/messages: oldest first."""
    page = store.list_messages(check_id(conversation_id), grant.subject, _limit(request), request.query.get("after"))
    return json_result(200, page)


def delete_conversation(grant: Grant, store: HistoryStore, conversation_id: str) -> HttpResult:
    """DELETE /v1/conversations/{id}."""
    store.delete(check_id(conversation_id), grant.subject)
    return json_result(200, {"id": conversation_id, "object": "conversation.deleted", "deleted": True})
