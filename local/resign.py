"""Give event files fresh signatures with the local stack's keys.

Static events cannot hold a valid signed URL (URLs live minutes, keys are generated per stack), so
`sig=local-resign` is re-signed now, `sig=local-resign-expired` is signed for a window that ended an
hour ago, and `sig=local-resign-tampered` is signed then has its subject changed. SW1 events use
`X-Sw-Signature=local-resign` (and `-expired` / `-tampered`: signed an hour ago / signed, then the
expiry changed). Anything else is sent as written.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sigstream.core.settings import parse_signing_keys, parse_sw1_apps
from sigstream.core.signed_url import Grant, sign_query

PLACEHOLDER = "local-resign"
# The signed URL's own parameters; any other (limit, after, ...) is a request parameter and is kept.
_SIGNED = {"sv", "kid", "sub", "cid", "nbf", "exp", "models", "max_tokens", "body_sha256", "nonce", "sig"}


def _resign_ours(query: str, event: dict[str, Any], keys_json: str, now: int) -> str:
    params = dict(parse_qsl(query))
    variant = params["sig"]
    if variant.endswith("-expired"):
        now -= 3600
    keys = parse_signing_keys(keys_json)
    grant = Grant(
        method=event["requestContext"]["http"]["method"],
        path=event["rawPath"],
        subject=params["sub"],
        not_before=now,
        expires=now + 300,
        conversation_id=params.get("cid"),
        models=tuple(params["models"].split(",")) if "models" in params else (),
        max_tokens=int(params["max_tokens"]) if "max_tokens" in params else None,
    )
    fresh = sign_query(grant, keys.active, keys.keys[keys.active])
    if variant.endswith("-tampered"):
        fresh = fresh.replace(f"sub={params['sub']}", "sub=someone-else")
    extra = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in _SIGNED]
    return f"{fresh}&{urlencode(extra)}" if extra else fresh


def _resign_sw1(query: str, event: dict[str, Any], apps_json: str, proxy: str, now: int) -> str:
    from signway_sdk import sign_url  # dev dependency: the reference client, as a backend would use it

    params = dict(parse_qsl(query))
    variant = params["X-Sw-Signature"]
    if variant.endswith("-expired"):
        now -= 3600
    app = next(iter(parse_sw1_apps(apps_json).values()))
    url = sign_url(
        id=app.id,
        secret=app.secret,
        host="http://local/",
        proxy_url=proxy,
        expiry=int(params.get("X-Sw-Expires", "300")),
        method=event["requestContext"]["http"]["method"],
        datetime_override=datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None),
    )
    fresh = str(url).split("?", 1)[1]
    if variant.endswith("-tampered"):
        expires = params.get("X-Sw-Expires", "300")
        fresh = fresh.replace(f"X-Sw-Expires={expires}", f"X-Sw-Expires={int(expires) * 10}")
    return fresh


def refresh_event(event_bytes: bytes, secrets: dict[str, str], proxy: str, now: int | None = None) -> bytes:
    """The event with placeholder signatures replaced; `secrets` maps 'signing-keys'/'sw1-apps' to values."""
    event = json.loads(event_bytes)
    query = event.get("rawQueryString", "")
    if PLACEHOLDER not in query:
        return event_bytes
    now = now or int(time.time())
    if "X-Sw-" in query:
        fresh = _resign_sw1(query, event, secrets["sw1-apps"], proxy, now)
    else:
        fresh = _resign_ours(query, event, secrets["signing-keys"], now)
    event["rawQueryString"] = fresh
    event["queryStringParameters"] = dict(parse_qsl(fresh))
    return json.dumps(event).encode()
