"""Make a committed event file ready to invoke: fresh signatures, and the data a "valid" event needs.

Used by `make event` (against the running `make dev`), `make invoke` (its own stack) and the RIE
tests. A valid messages or delete event names conversation `cid` of subject `sub`; on a fresh stack
that conversation does not exist, so it is created first with one real chat turn through the Stream
function (through whatever `Caller` the user of this module has: a URL or a function pool).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from local.resign import PLACEHOLDER, refresh_event
from sigstream.core.routes import match_route
from sigstream.core.settings import parse_signing_keys
from sigstream.core.signed_url import Grant, sign_query

# (method, path, raw query, body) -> HTTP status, through the Stream function.
Caller = Callable[[str, str, str, bytes], int]
SEED_MESSAGE = "Seed turn for the events/ messages and delete examples."


class EventFileError(Exception):
    """An event file that is not a Function URL event (not JSON, not an object, fields missing)."""


def check_event(event_bytes: bytes) -> None:
    """Refuse, with the reason, what no function could be invoked with: anything but one JSON object."""
    try:
        event = json.loads(event_bytes)
    except ValueError as exc:
        raise EventFileError(f"not JSON ({exc})") from None
    if not isinstance(event, dict):
        raise EventFileError(f"a JSON {type(event).__name__}, not an event object (see events/README.md)")


def conversation_needed(event: dict[str, object]) -> tuple[str, str] | None:
    """(subject, conversation id) a valid messages/delete/stop/resume event reads, else None."""
    query = str(event.get("rawQueryString") or "")
    params = dict(parse_qsl(query))
    if params.get("sig") != PLACEHOLDER:  # expired/tampered/malformed events fail before any lookup
        return None
    route = match_route(str(event.get("rawPath") or ""))
    if (
        route is None
        or route.name not in ("list_messages", "delete_conversation", "stop_turn", "resume_stream")
        or not route.conversation_id
    ):
        return None
    return params["sub"], route.conversation_id


def _signed(keys_json: str, method: str, path: str, subject: str, conversation_id: str | None, now: int) -> str:
    keys = parse_signing_keys(keys_json)
    grant = Grant(method, path, subject, now, now + 60, conversation_id=conversation_id)
    return sign_query(grant, keys.active, keys.keys[keys.active])


def ensure_conversation(subject: str, conversation_id: str, keys_json: str, call: Caller, now: int) -> bool:
    """Create the conversation with one chat turn unless it exists; returns whether it was created."""
    path = f"/v1/conversations/{conversation_id}/messages"
    if call("GET", path, _signed(keys_json, "GET", path, subject, None, now), b"") == 200:
        return False
    body = json.dumps({"stream": False, "messages": [{"role": "user", "content": SEED_MESSAGE}]}).encode()
    query = _signed(keys_json, "POST", "/v1/chat/completions", subject, conversation_id, now)
    status = call("POST", "/v1/chat/completions", query, body)
    if status != 200:
        raise RuntimeError(f"could not create conversation {conversation_id} for the event (chat turn: {status})")
    return True


def prepare_event(
    event_bytes: bytes, secrets: dict[str, str], sw1_proxy: str, call: Caller | None, now: int | None = None
) -> bytes:
    """The event, re-signed now; a valid messages/delete event's conversation exists afterwards."""
    now = now or int(time.time())
    check_event(event_bytes)
    try:
        fresh = refresh_event(event_bytes, secrets, sw1_proxy, now)
        needed = conversation_needed(json.loads(event_bytes))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a placeholder without the fields to sign
        raise EventFileError(f"not a Function URL event with a signed URL to re-sign ({exc!r})") from None
    if needed and call is not None:
        ensure_conversation(*needed, secrets["signing-keys"], call, now)
    return fresh
