"""The Stream function's routes: one table for the Sign function, the CLI and the router."""

from __future__ import annotations

import re
from dataclasses import dataclass

CHAT_PATH = "/v1/chat/completions"
UI_CHAT_PATH = "/v1/chat"  # the Vercel AI SDK's useChat (DefaultChatTransport / TextStreamChatTransport)
CONVERSATIONS_PATH = "/v1/conversations"
_MESSAGES = re.compile(r"^/v1/conversations/([^/]*)/messages$")
_STOP = re.compile(r"^/v1/conversations/([^/]*)/stop$")
_STREAM = re.compile(r"^/v1/conversations/([^/]*)/stream$")
_CONVERSATION = re.compile(r"^/v1/conversations/([^/]*)$")
_UI_STREAM = re.compile(r"^/v1/chat/([^/]*)/stream$")  # the SDK's reconnectToStream URL shape under /v1/chat
# Routes that run a chat turn: the URL names its conversation (or is stateless), and the Sign function issues one.
TURN_ROUTES = frozenset({"chat", "ui_chat"})


@dataclass(frozen=True)
class Route:
    """A matched route: its name, the one method it takes, and the conversation id in its path."""

    name: str
    method: str
    conversation_id: str | None = None


def match_route(path: str) -> Route | None:
    """The route for a path, or None."""
    if path == CHAT_PATH:
        return Route("chat", "POST")
    if path == UI_CHAT_PATH:
        return Route("ui_chat", "POST")
    if path == CONVERSATIONS_PATH:
        return Route("list_conversations", "GET")
    found = _MESSAGES.fullmatch(path)
    if found:
        return Route("list_messages", "GET", found.group(1))
    found = _STOP.fullmatch(path)
    if found:
        return Route("stop_turn", "POST", found.group(1))
    found = _STREAM.fullmatch(path)
    if found:
        return Route("resume_stream", "GET", found.group(1))
    found = _UI_STREAM.fullmatch(path)
    if found:
        return Route("ui_resume_stream", "GET", found.group(1))
    found = _CONVERSATION.fullmatch(path)
    if found:
        return Route("delete_conversation", "DELETE", found.group(1))
    return None
