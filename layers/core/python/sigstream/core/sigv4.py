"""AWS Signature Version 4 (pure): the canonical request, the signature, and header signing."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import quote


def canonical_query(raw_query: str) -> str:
    """Query as botocore signs it: the already percent-encoded pairs as sent, sorted."""
    if not raw_query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in raw_query.split("&"))
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_path(raw_path: str) -> str:
    """Path as non-S3 services sign it: dot segments and empty segments removed, then encoded once more."""
    if not raw_path:
        return "/"
    segments: list[str] = []
    for segment in raw_path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    first = "/" if raw_path.startswith("/") else ""
    last = "/" if raw_path.endswith("/") and segments else ""
    return quote(first + "/".join(segments) + last, safe="/~")


def signature(
    *,
    secret_key: str,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    signed_names: Sequence[str],
    payload_hash: str,
    amz_date: str,
    region: str,
    service: str,
) -> str:
    """Hex SigV4 signature over a request; `headers` are (lower-case name, value) pairs."""
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(value)
    canonical_headers = "".join(f"{n}:{','.join(' '.join(v.split()) for v in values[n])}\n" for n in signed_names)
    canonical = "\n".join(
        [
            method,
            canonical_path(raw_path),
            canonical_query(raw_query),
            canonical_headers,
            ";".join(signed_names),
            payload_hash,
        ]
    )
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    return hmac.digest(signing_key(secret_key, date, region, service), to_sign.encode(), "sha256").hex()


@lru_cache(maxsize=16)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key for one day, region and service (four HMACs; the same all day, so kept)."""
    key = f"AWS4{secret_key}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def sign_headers(
    *,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    method: str,
    host: str,
    raw_path: str,
    body: bytes,
    headers: dict[str, str],
    amz_date: str,
    region: str,
    service: str,
    raw_query: str = "",
) -> dict[str, str]:
    """Headers (with Authorization) for a request; `amz_date` is YYYYMMDDTHHMMSSZ."""
    payload_hash = hashlib.sha256(body).hexdigest()
    out = {k.lower(): v for k, v in headers.items()}
    out.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
    if session_token:
        out["x-amz-security-token"] = session_token
    names = sorted(out)
    sig = signature(
        secret_key=secret_key,
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=list(out.items()),
        signed_names=names,
        payload_hash=payload_hash,
        amz_date=amz_date,
        region=region,
        service=service,
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={sig}"
    )
    return out
