"""Listing cursors: opaque to clients, and only ever a position, never a storage key (pure).

A cursor names where the last page ended (a conversation's `<updated>#<id>` sort key, or a message's sequence
number); the history store rebuilds the rest of the key from what the signed URL grants. Cursors issued
before this format (base64 JSON of DynamoDB's LastEvaluatedKey) are still read, for their position only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from sigstream.core.errors import BadRequestError

CONVERSATION_POSITION = re.compile(r"[0-9]{12,13}#[A-Za-z0-9_-]{8,64}")  # seconds (older items) or milliseconds
_MESSAGE_SORT_KEY = re.compile(r"MSG#([0-9]{8})")
MAX_CURSOR_CHARS = 512


def _bad() -> BadRequestError:
    return BadRequestError("after is not a valid cursor", param="after")


def _decode(cursor: str) -> str:
    if len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise _bad()
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise _bad() from exc


def _legacy(text: str, attribute: str) -> str:
    """The sort key in an old cursor (a LastEvaluatedKey as JSON); nothing else of it is used."""
    try:
        key = json.loads(text)
        value = key[attribute]["S"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _bad() from exc
    if not isinstance(value, str):
        raise _bad()
    return value


def conversations_cursor(position: str) -> str:
    """The cursor after a conversation whose GSI sort key is `position`."""
    return base64.urlsafe_b64encode(f"c:{position}".encode()).decode().rstrip("=")


def parse_conversations_cursor(cursor: str) -> str:
    """The GSI sort key a conversations cursor points after."""
    text = _decode(cursor)
    position = text[2:] if text.startswith("c:") else _legacy(text, "gsi1sk")
    if not CONVERSATION_POSITION.fullmatch(position):
        raise _bad()
    return position


def messages_cursor(sequence: int) -> str:
    """The cursor after the message with this sequence number."""
    return base64.urlsafe_b64encode(f"m:{sequence}".encode()).decode().rstrip("=")


def parse_messages_cursor(cursor: str) -> int:
    """The sequence number a messages cursor points after."""
    text = _decode(cursor)
    if text.startswith("m:"):
        digits = text[2:]
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 8):
            raise _bad()
        return int(digits)
    found = _MESSAGE_SORT_KEY.fullmatch(_legacy(text, "sk"))
    if not found:
        raise _bad()
    return int(found.group(1))
