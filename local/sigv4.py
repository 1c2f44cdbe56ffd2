"""Verify AWS Signature Version 4 on requests to AWS_IAM Function URLs (pure: `now` is passed in)."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sigstream.core import sigv4 as aws_sigv4

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
    match = _AUTH.fullmatch((lowered.get("authorization") or [""])[0])
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
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise SignatureError("bad X-Amz-Date") from exc
    if amz_date[:8] != date or abs((now - signed_at).total_seconds()) > MAX_SKEW_SECONDS:
        raise SignatureError("signature date out of range")
    names = signed_names.split(";")
    if "host" not in names or any(n not in lowered for n in names):
        raise SignatureError("signed header missing")
    # The signature must cover the body itself: the canonical request always carries the body's real hash,
    # and a declared X-Amz-Content-SHA256 must be that hash. UNSIGNED-PAYLOAD (or a streaming sentinel) would
    # let a captured request replay with another body, so it is refused, as the Lambda service does.
    payload_hash = hashlib.sha256(body).hexdigest()
    declared = lowered.get("x-amz-content-sha256")
    if declared is not None and (len(declared) != 1 or not hmac.compare_digest(declared[0], payload_hash)):
        raise SignatureError("payload hash missing from the signature or not the body's")
    expected = aws_sigv4.signature(
        secret_key=secret,
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=[(n, v) for n, vs in lowered.items() for v in vs],
        signed_names=names,
        payload_hash=payload_hash,
        amz_date=amz_date,
        region=sig_region,
        service=sig_service,
    )
    if not hmac.compare_digest(expected, signature):
        raise SignatureError("signature mismatch")
    return Caller(
        access_key=access_key,
        account_id=account_id,
        user_arn=f"arn:aws:iam::{account_id}:user/local-developer",
        user_id="AIDALOCALDEVELOPER",
    )
