"""Verify AWS Signature Version 4 on requests to AWS_IAM Function URLs (pure: `now` is passed in)."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qsl, quote

MAX_SKEW_SECONDS = 15 * 60
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
    r"SignedHeaders=([a-z0-9;_.-]+),\s*Signature=([0-9a-f]{64})$"
)


class SignatureError(Exception):
    """The request is not correctly signed (the reason stays server-side)."""


@dataclass(frozen=True)
class Caller:
    """Who signed the request."""

    access_key: str
    account_id: str
    user_arn: str
    user_id: str


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _canonical_query(raw_query: str) -> str:
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def verify_sigv4(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    secrets: dict[str, str],
    account_id: str,
    service: str,
    region: str,
    now: datetime,
) -> Caller:
    """Check the Authorization header; returns the caller or raises SignatureError."""
    lowered: dict[str, list[str]] = {}
    for name, value in headers:
        lowered.setdefault(name.lower(), []).append(value)
    match = _AUTH.match((lowered.get("authorization") or [""])[0])
    if not match:
        raise SignatureError("missing or malformed Authorization header")
    access_key, date, sig_region, sig_service, signed_names, signature = match.groups()
    secret = secrets.get(access_key)
    if secret is None:
        raise SignatureError("unknown access key")
    if sig_service != service or sig_region != region:
        raise SignatureError("wrong credential scope")
    amz_date = (lowered.get("x-amz-date") or [""])[0]
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise SignatureError("bad X-Amz-Date") from exc
    if amz_date[:8] != date or abs((now - signed_at).total_seconds()) > MAX_SKEW_SECONDS:
        raise SignatureError("signature date out of range")
    names = signed_names.split(";")
    if "host" not in names or any(n not in lowered for n in names):
        raise SignatureError("signed header missing")
    canonical_headers = "".join(
        f"{n}:{','.join(' '.join(v.split()) for v in lowered[n])}\n" for n in names
    )
    payload_hash = (lowered.get("x-amz-content-sha256") or [hashlib.sha256(body).hexdigest()])[0]
    if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
        raise SignatureError("payload hash mismatch")
    # botocore signs the already-encoded path, encoding it once more (non-S3 services).
    path = quote(raw_path or "/", safe="/~")
    canonical = "\n".join(
        [method, path, _canonical_query(raw_query), canonical_headers, signed_names, payload_hash]
    )
    scope = f"{date}/{sig_region}/{sig_service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date), sig_region), sig_service), "aws4_request")
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError("signature mismatch")
    return Caller(
        access_key=access_key,
        account_id=account_id,
        user_arn=f"arn:aws:iam::{account_id}:user/local-developer",
        user_id="AIDALOCALDEVELOPER",
    )
