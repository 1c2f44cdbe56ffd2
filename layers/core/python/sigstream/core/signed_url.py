"""Sigstream's own pre-signed URL scheme, version 1 (pure: keys and `now` are passed in).

A URL carries its grant in query parameters; the signature is HMAC-SHA256 over a JSON array of every
field, so no two different grants share a canonical form. See docs/url-scheme.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from sigstream.core.errors import BadRequestError, ExpiredError, InvalidSignatureError

VERSION = "1"
DEFAULT_SKEW = 30
_PARAMS = ("sv", "kid", "sub", "cid", "nbf", "exp", "models", "max_tokens", "n", "body_sha256", "nonce", "sig")
_PATTERNS = {
    "sv": re.compile(r"^1$"),
    "kid": re.compile(r"^[A-Za-z0-9_-]{1,32}$"),
    "sub": re.compile(r"^[A-Za-z0-9._:@|+=-]{1,128}$"),
    "cid": re.compile(r"^[A-Za-z0-9_-]{8,64}$"),
    "nbf": re.compile(r"^(0|[1-9][0-9]{0,11})$"),
    "exp": re.compile(r"^(0|[1-9][0-9]{0,11})$"),
    "models": re.compile(r"^[A-Za-z0-9._:/@-]{1,100}(,[A-Za-z0-9._:/@-]{1,100}){0,15}$"),
    "max_tokens": re.compile(r"^[1-9][0-9]{0,6}$"),
    "n": re.compile(r"^([1-9]|1[0-6])$"),
    "body_sha256": re.compile(r"^[0-9a-f]{64}$"),
    "nonce": re.compile(r"^[A-Za-z0-9_-]{16,64}$"),
    "sig": re.compile(r"^[A-Za-z0-9_-]{43}$"),
}
_REQUIRED = ("sv", "kid", "sub", "nbf", "exp", "sig")
SUBJECT_PATTERN = _PATTERNS["sub"]
CONVERSATION_PATTERN = _PATTERNS["cid"]
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9._:/@-]{1,100}$")


@dataclass(frozen=True)
class Grant:
    """What a signed URL allows: one method on one path, for one subject, for a while."""

    method: str
    path: str
    subject: str
    not_before: int
    expires: int
    conversation_id: str | None = None
    models: tuple[str, ...] = ()
    max_tokens: int | None = None
    body_sha256: str | None = None
    nonce: str | None = None
    n: int | None = None  # choices per request (absent: 1)


def _canonical(grant: Grant, kid: str) -> bytes:
    fields = [
        "sigstream-url-v" + VERSION,
        grant.method,
        grant.path,
        kid,
        grant.subject,
        grant.conversation_id or "",
        str(grant.not_before),
        str(grant.expires),
        ",".join(grant.models),
        "" if grant.max_tokens is None else str(grant.max_tokens),
        grant.body_sha256 or "",
        grant.nonce or "",
    ]
    if grant.n is not None:  # appended only when signed, so URLs issued before `n` existed still verify
        fields.append(str(grant.n))
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode()


def _mac(secret: bytes, grant: Grant, kid: str) -> str:
    digest = hmac.new(secret, _canonical(grant, kid), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_query(grant: Grant, kid: str, secret: bytes) -> str:
    """The query string that authorises `grant` (validated with the same rules the verifier applies)."""
    params = {
        "sv": VERSION,
        "kid": kid,
        "sub": grant.subject,
        "cid": grant.conversation_id,
        "nbf": str(grant.not_before),
        "exp": str(grant.expires),
        "models": ",".join(grant.models) or None,
        "max_tokens": None if grant.max_tokens is None else str(grant.max_tokens),
        "n": None if grant.n is None else str(grant.n),
        "body_sha256": grant.body_sha256,
        "nonce": grant.nonce,
    }
    present = {k: v for k, v in params.items() if v is not None}
    for name, value in present.items():
        if not _PATTERNS[name].fullmatch(value):
            raise BadRequestError(f"{name} has an invalid value", param=name)
    present["sig"] = _mac(secret, grant, kid)
    return urlencode(present)


def parse_query(raw_query: str) -> dict[str, str]:
    """Our parameters from a raw query: each at most once, well formed; unknown ones ignored."""
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, errors="strict", max_num_fields=64)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError("query string is malformed", param="query") from exc
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PATTERNS:
            continue
        if name in found:
            raise BadRequestError(f"query parameter {name} appears more than once", param=name)
        if not _PATTERNS[name].fullmatch(value):
            raise BadRequestError(f"query parameter {name} has an invalid value", param=name)
        found[name] = value
    for name in _REQUIRED:
        if name not in found:
            raise BadRequestError(f"missing query parameter {name}", param=name)
    return found


def verify_query(
    *,
    method: str,
    path: str,
    raw_query: str,
    keys: Mapping[str, bytes],
    now: float,
    max_lifetime: int,
    skew: int = DEFAULT_SKEW,
) -> Grant:
    """Check a signed URL; raises BadRequestError, InvalidSignatureError or ExpiredError."""
    found = parse_query(raw_query)
    grant = Grant(
        method=method,
        path=path,
        subject=found["sub"],
        conversation_id=found.get("cid"),
        not_before=int(found["nbf"]),
        expires=int(found["exp"]),
        models=tuple(found["models"].split(",")) if "models" in found else (),
        max_tokens=int(found["max_tokens"]) if "max_tokens" in found else None,
        body_sha256=found.get("body_sha256"),
        nonce=found.get("nonce"),
        n=int(found["n"]) if "n" in found else None,
    )
    kid = found["kid"]
    # Unknown key ids are checked against a throwaway key: same cost, same answer as a bad signature.
    expected = _mac(keys.get(kid, b"\x00unknown-key"), grant, kid)
    if not hmac.compare_digest(expected.encode(), found["sig"].encode()) or kid not in keys:
        raise InvalidSignatureError()
    if grant.expires <= grant.not_before or grant.expires - grant.not_before > max_lifetime:
        raise InvalidSignatureError()
    if now < grant.not_before - skew or now > grant.expires + skew:
        raise ExpiredError()
    return grant
