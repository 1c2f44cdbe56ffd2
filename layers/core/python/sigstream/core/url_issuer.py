"""Turn a signing request into a signed Stream URL (pure: keys, clock and id source are passed in)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from sigstream.core.errors import BadRequestError
from sigstream.core.routes import TURN_ROUTES, match_route
from sigstream.core.settings import SigningKeys
from sigstream.core.signed_url import CONVERSATION_PATTERN, Grant, sign_query


@dataclass(frozen=True)
class SignSpec:
    """What a backend asks to sign."""

    subject: str
    method: str = "POST"
    path: str = "/v1/chat/completions"
    conversation_id: str | None = None
    stateless: bool = False
    expires_in: int = 300
    single_use: bool = False
    models: tuple[str, ...] = ()
    max_tokens: int | None = None
    body_sha256: str | None = None
    n: int | None = None


def random_id(prefix: str) -> str:
    """A fresh unguessable id (conversation ids, single-use nonces): 144 random bits, URL-safe."""
    return prefix + secrets.token_urlsafe(18)


def issue_url(
    spec: SignSpec,
    keys: SigningKeys,
    stream_url: str,
    *,
    now: int,
    max_lifetime: int,
    new_id: Callable[[str], str],
) -> dict[str, Any]:
    """The signed URL document: url, base_url + query (for SDKs), expires_at, conversation_id."""
    route = match_route(spec.path)
    if route is None:
        raise BadRequestError("path is not a Stream function route", param="path")
    if spec.method != route.method:
        raise BadRequestError(f"method must be {route.method} for this path", param="method")
    if not 1 <= spec.expires_in <= max_lifetime:
        raise BadRequestError(f"expires_in must be from 1 to {max_lifetime} seconds", param="expires_in")
    conversation_id = spec.conversation_id
    if route.conversation_id is not None:
        if conversation_id not in (None, route.conversation_id):
            raise BadRequestError("conversation_id does not match the path", param="conversation_id")
        conversation_id = route.conversation_id
    elif route.name in TURN_ROUTES and spec.stateless:
        if conversation_id:
            raise BadRequestError("a stateless URL cannot name a conversation", param="conversation_id")
    elif route.name in TURN_ROUTES and conversation_id is None:
        conversation_id = new_id("conv_")
    elif route.name not in TURN_ROUTES and conversation_id:
        raise BadRequestError("this path takes no conversation_id", param="conversation_id")
    if conversation_id is not None and not CONVERSATION_PATTERN.fullmatch(conversation_id):
        raise BadRequestError("conversation_id is malformed", param="conversation_id")
    grant = Grant(
        method=spec.method,
        path=spec.path,
        subject=spec.subject,
        not_before=now,
        expires=now + spec.expires_in,
        conversation_id=conversation_id,
        models=spec.models,
        max_tokens=spec.max_tokens,
        body_sha256=spec.body_sha256,
        nonce=new_id("") if spec.single_use else None,
        n=spec.n,
    )
    query = sign_query(grant, keys.active, keys.keys[keys.active])
    base = stream_url.rstrip("/")
    return {
        "url": f"{base}{spec.path}?{query}",
        # SDKs append /chat/completions themselves and take the signature as default query parameters.
        "base_url": f"{base}/v1",
        "query": dict(parse_qsl(query)),
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(grant.expires)),
        "conversation_id": conversation_id,
        "method": spec.method,
    }
