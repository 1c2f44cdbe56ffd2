"""Signway SW1-HMAC-SHA256 verification, byte-compatible with the Signway server (pure: `now` is passed in).

Deliberate differences from Signway: constant-time comparison, no crash on any input, unknown ids look like
any other bad signature, the body size is capped before it is read, and the proxy URL must be allowlisted.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote

from sigstream.core.errors import BadRequestError, ExpiredError, InvalidSignatureError, PayloadTooLargeError

ALGORITHM = "SW1-HMAC-SHA256"
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$")
_U32 = re.compile(r"^\+?[0-9]+$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 header-name characters
_MAX_HEADER_NAMES = 64
DEFAULT_APP_RATE_LIMIT = 120  # requests a minute, the whole app
DEFAULT_URL_RATE_LIMIT = 20  # requests a minute, one signed URL


@dataclass(frozen=True)
class Sw1App:
    """A registered app: its secret, the upstream URLs it may reach, and headers to inject."""

    id: str
    secret: str
    allowed_proxies: tuple[str, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    max_lifetime: int | None = None  # None: the deployment's maximum URL lifetime
    rate_limit_per_minute: int = DEFAULT_APP_RATE_LIMIT
    url_rate_limit_per_minute: int = DEFAULT_URL_RATE_LIMIT
    models: tuple[str, ...] = ()  # for bodies the app did not sign: () allows any
    max_tokens: int | None = None  # for bodies the app did not sign: a cap, and the default
    parameters: tuple[str, ...] = ()  # with a policy, what unsigned bodies may send besides the structural ones

    def allows(self, url: str) -> bool:
        """Exact match, or prefix match for entries ending in `*`."""
        return any(url.startswith(a[:-1]) if a.endswith("*") else url == a for a in self.allowed_proxies)


@dataclass(frozen=True)
class Sw1Grant:
    """A verified SW1 request: which app, and exactly which URL to forward to."""

    app: Sw1App
    proxy_url: str
    body_signed: bool
    signature: str = ""  # identifies the signed URL (its rate limit)


def _enc(value: str) -> str:
    return quote(value, safe="-._~")


def _parse_u32(value: str) -> int:
    if not _U32.fullmatch(value) or len(value.lstrip("+").lstrip("0")) > 10:
        raise BadRequestError("X-Sw-Expires must be an unsigned 32-bit integer", param="X-Sw-Expires")
    number = int(value)
    if number > 0xFFFFFFFF:
        raise BadRequestError("X-Sw-Expires must be an unsigned 32-bit integer", param="X-Sw-Expires")
    return number


def _parse_date(value: str) -> int:
    match = _DATE.fullmatch(value)
    if not match:
        raise BadRequestError("X-Sw-Date must look like 20230619T195222Z", param="X-Sw-Date")
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    # Validate with calendar arithmetic only: no datetime overflow near year 9999, no year 0.
    if not (year >= 1 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise BadRequestError("X-Sw-Date is not a valid date", param="X-Sw-Date")
    if hour > 23 or minute > 59 or second > 59:
        raise BadRequestError("X-Sw-Date is not a valid time", param="X-Sw-Date")
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def is_sw1_query(raw_query: str) -> bool:
    """Whether a query string is an SW1 request (routes `POST /?X-Sw-...`)."""
    return "X-Sw-" in raw_query


def verify_sw1(
    *,
    method: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    read_body: Callable[[int], bytes],
    apps: Mapping[str, Sw1App],
    normalise_url: Callable[[str], str],
    now: float,
    max_body: int,
    max_lifetime: int = 3600,
    skew: int = 30,
) -> tuple[Sw1Grant, bytes | None]:
    """Verify an SW1 request as the Signway server does; returns the grant and the body if it was signed.

    `read_body(limit)` is only called for signed bodies, after Content-Length was checked against `max_body`.
    `normalise_url` is the WHATWG serialiser (rust-url's `Url::to_string`); it raises ValueError if unparsable.
    Beyond Signway: a URL may not live longer than the app's `max_lifetime` (default `max_lifetime`), and a
    date more than `skew` seconds in the future is refused (a URL dated 2099 would otherwise live forever).
    """
    try:  # last value wins, as in Signway
        params = dict(parse_qsl(raw_query, keep_blank_values=True, errors="replace", max_num_fields=64))
    except ValueError as exc:
        raise BadRequestError("query string has too many parameters", param="query") from exc

    def need(name: str) -> str:
        if name not in params:
            raise BadRequestError(f"missing query parameter {name}", param=name)
        return params[name]

    need("X-Sw-Algorithm")  # Signway never checks its value; neither may we, or valid URLs would be refused
    date = need("X-Sw-Date")
    signed_at = _parse_date(date)
    expires = _parse_u32(need("X-Sw-Expires"))
    signed_names: list[str] = []
    for raw_name in need("X-Sw-SignedHeaders").split(";"):
        if not raw_name:
            continue
        if not _TOKEN.fullmatch(raw_name):
            raise BadRequestError("X-Sw-SignedHeaders has an invalid header name", param="X-Sw-SignedHeaders")
        name = raw_name.lower()
        if name not in signed_names:
            signed_names.append(name)
    if len(signed_names) > _MAX_HEADER_NAMES:
        raise BadRequestError("X-Sw-SignedHeaders lists too many headers", param="X-Sw-SignedHeaders")
    try:
        proxy_url = normalise_url(need("X-Sw-Proxy"))
    except ValueError as exc:
        raise BadRequestError("X-Sw-Proxy is not a valid URL", param="X-Sw-Proxy") from exc
    app_id = need("X-Sw-Credential").split("/", 1)[0]
    if not app_id:
        raise BadRequestError("X-Sw-Credential has no id", param="X-Sw-Credential")
    signature = need("X-Sw-Signature")
    body_signed = need("X-Sw-Body") == "true"
    if not proxy_url.startswith(("http://", "https://")) or proxy_url.split("/", 3)[2] in ("", "@"):
        raise BadRequestError("X-Sw-Proxy must be an http(s) URL with a host", param="X-Sw-Proxy")
    if now > signed_at + expires:  # inclusive: now == date + expires is still valid
        raise ExpiredError()

    first_values: dict[str, str] = {}
    for name, value in headers:
        first_values.setdefault(name.lower(), value)
    canonical_headers = []
    for name in sorted(signed_names):
        if name not in first_values:
            raise BadRequestError(f"signed header {name} is missing from the request", param="X-Sw-SignedHeaders")
        value = first_values[name]
        if not value.isascii():
            raise BadRequestError(f"signed header {name} is not ASCII", param=name)
        canonical_headers.append(f"{name}:{value.strip()}")

    app = apps.get(app_id)
    body: bytes | None = None
    if body_signed:
        length_text = first_values.get("content-length", "")
        if not length_text.isdigit():
            raise BadRequestError("a signed body needs a Content-Length header", param="Content-Length")
        if int(length_text) > max_body:
            raise PayloadTooLargeError(f"request body exceeds {max_body} bytes")
        body = read_body(int(length_text))
        if len(body) > int(length_text):
            raise BadRequestError("body is longer than Content-Length", param="Content-Length")
    try:
        body_text = body.decode("utf-8") if body is not None else ""
    except UnicodeDecodeError as exc:
        raise BadRequestError("a signed body must be UTF-8", param="body") from exc

    query = "&".join(
        f"{_enc(k)}={_enc(v)}"
        for k, v in sorted(
            {
                "X-Sw-Algorithm": ALGORITHM,
                "X-Sw-Body": "true" if body_signed else "false",
                "X-Sw-Credential": f"{app_id}/{date[:8]}",
                "X-Sw-Date": date,
                "X-Sw-Expires": str(expires),
                "X-Sw-Proxy": proxy_url,
                "X-Sw-SignedHeaders": ";".join(signed_names),
            }.items()
        )
    )
    canonical = "\n".join(
        [method, "/", query, "\n".join(canonical_headers), "", ";".join(sorted(signed_names)), body_text]
    )
    to_sign = "\n".join([ALGORITHM, date, date[:8], hashlib.sha256(canonical.encode()).hexdigest()])
    # An unknown id is checked against a throwaway key so it costs and looks the same as a bad signature.
    secret = app.secret if app else "\x00unknown-app"
    key = hmac.new((ALGORITHM + secret).encode(), date[:8].encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")) or app is None:
        raise InvalidSignatureError()
    if not app.allows(proxy_url):
        raise InvalidSignatureError()
    if expires > (app.max_lifetime or max_lifetime):
        raise InvalidSignatureError()
    if signed_at > now + skew:
        raise ExpiredError()
    return Sw1Grant(app=app, proxy_url=proxy_url, body_signed=body_signed, signature=signature), body
