"""Pure-core hardening: `n` in signed URLs, full-match patterns, SW1 lifetime/date limits, local SigV4 payload hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from signway_sdk import sign_url

from local.sigv4 import SignatureError, verify_sigv4
from sigstream.core.errors import BadRequestError, ExpiredError, InvalidSignatureError, SigstreamError
from sigstream.core.routes import match_route
from sigstream.core.settings import ConfigError, SigningKeys, parse_sw1_apps
from sigstream.core.signed_url import CONVERSATION_PATTERN, Grant, sign_query, verify_query
from sigstream.core.sw1 import Sw1App, verify_sw1
from sigstream.core.url_issuer import SignSpec, issue_url
from stream_app.sw1_proxy import _normalise

KEY = b"0123456789abcdef0123456789abcdef"
NOW = 1_700_000_100


def test_n_is_signed_with_a_documented_canonical_form_and_old_urls_still_verify() -> None:
    grant = Grant("POST", "/v1/chat/completions", "alice", 1_700_000_000, 1_700_000_300, n=4)
    query = sign_query(grant, "k1", KEY)
    canonical = json.dumps(
        [
            "sigstream-url-v1",
            "POST",
            "/v1/chat/completions",
            "k1",
            "alice",
            "",
            "1700000000",
            "1700000300",
            *([""] * 4),
            "4",
        ],
        separators=(",", ":"),
    ).encode()
    expected = base64.urlsafe_b64encode(hmac.new(KEY, canonical, hashlib.sha256).digest()).rstrip(b"=").decode()
    params = dict(parse_qsl(query))
    assert params["n"] == "4" and params["sig"] == expected == "kMuibYuJGrNh2rmAijgLbwzQr9JM8ujrpIuBSv3paVA"  # docs
    verified = verify_query(
        method="POST", path="/v1/chat/completions", raw_query=query, keys={"k1": KEY}, now=NOW, max_lifetime=3600
    )
    assert verified.n == 4
    # The documented v1 vector (no n) verifies exactly as before.
    old = "sv=1&kid=k1&sub=alice&cid=conv_0123456789abcdef&nbf=1700000000&exp=1700000300"
    old += "&sig=HKwBoKnaWJJLNBF7LB9lRqVZivMI4h2rrK8XLuE6Q8s"
    assert (
        verify_query(
            method="POST", path="/v1/chat/completions", raw_query=old, keys={"k1": KEY}, now=NOW, max_lifetime=3600
        ).n
        is None
    )
    # n cannot be added to, or removed from, a URL.
    for forged in (old + "&n=4", query.replace("&n=4", "")):
        with pytest.raises(InvalidSignatureError):
            verify_query(
                method="POST",
                path="/v1/chat/completions",
                raw_query=forged,
                keys={"k1": KEY},
                now=NOW,
                max_lifetime=3600,
            )
    for bad in ("0", "17", "04", "1\n"):
        with pytest.raises(BadRequestError):
            verify_query(
                method="POST",
                path="/v1/chat/completions",
                raw_query=old + "&n=" + quote(bad),
                keys={"k1": KEY},
                now=NOW,
                max_lifetime=3600,
            )


@pytest.mark.parametrize(
    "path",
    [
        "/v1/conversations\n",
        "/v1/conversations/conv_abcdefgh\n",
        "/v1/conversations/conv_abcdefgh/messages\n",
        "/v1/chat/completions\n",
    ],
)
def test_paths_with_a_trailing_line_feed_match_no_route_and_are_never_signed(path: str) -> None:
    route = match_route(path)
    assert route is None or not CONVERSATION_PATTERN.fullmatch(route.conversation_id or "")
    keys = SigningKeys("k1", {"k1": KEY})
    with pytest.raises(BadRequestError):
        issue_url(
            SignSpec("u", "GET", path), keys, "https://x/", now=NOW, max_lifetime=3600, new_id=lambda p: p + "x" * 12
        )


@pytest.mark.parametrize("name,value", [("sub", "alice%0A"), ("cid", "conv_abcdefgh%0A"), ("kid", "k1%0A")])
def test_query_values_with_a_trailing_line_feed_are_400s(name: str, value: str) -> None:
    grant = Grant("POST", "/v1/chat/completions", "alice", NOW, NOW + 60, "conv_abcdefgh")
    params = dict(parse_qsl(sign_query(grant, "k1", KEY)))
    params[name] = "@@"
    query = "&".join(f"{k}={quote(v) if k != name else value}" for k, v in params.items())
    with pytest.raises(BadRequestError) as info:
        verify_query(
            method="POST", path="/v1/chat/completions", raw_query=query, keys={"k1": KEY}, now=NOW, max_lifetime=3600
        )
    assert info.value.param == name


APP = Sw1App("app", "app-secret-0123456789", ("http://up/*",))


def sw1(url: str, now: float, app: Sw1App = APP, **kw: int) -> object:
    return verify_sw1(
        method="GET",
        raw_query=urlsplit(url).query,
        headers=[],
        read_body=lambda n: b"",
        apps={app.id: app},
        normalise_url=_normalise,
        now=now,
        max_body=1024,
        **kw,
    )


def signed(expiry: int, when: datetime, app: Sw1App = APP) -> str:
    return sign_url(app.id, app.secret, "https://gw/", "http://up/v1/chat", expiry, "GET", datetime_override=when)


def test_sw1_lifetimes_are_capped_and_future_dates_refused() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    now = when.timestamp() + 5
    assert sw1(signed(600, when), now)
    with pytest.raises(InvalidSignatureError):
        sw1(signed(4_294_967_295, when), now)  # would otherwise never expire
    with pytest.raises(InvalidSignatureError):
        sw1(signed(3601, when), now)  # the deployment's maximum
    with pytest.raises(InvalidSignatureError):
        sw1(
            signed(601, when, Sw1App("app", APP.secret, APP.allowed_proxies, max_lifetime=600)),
            now,
            Sw1App("app", APP.secret, APP.allowed_proxies, max_lifetime=600),
        )
    for future in (datetime(2099, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)):
        with pytest.raises(ExpiredError):
            sw1(signed(60, future), now)
    assert sw1(signed(60, datetime.fromtimestamp(now + 25, UTC)), now)  # within the clock skew


def test_sw1_year_zero_and_other_odd_dates_are_400s() -> None:
    for query in (
        "X-Sw-Algorithm=a&X-Sw-Date=00000101T000000Z",
        "X-Sw-Algorithm=a&X-Sw-Date=20230230T000000Z",
        "X-Sw-Algorithm=a&X-Sw-Date=20230101T000000Z%0A",
    ):
        with pytest.raises(BadRequestError) as info:
            sw1("https://gw/?" + query, NOW)
        assert info.value.param == "X-Sw-Date"
    with pytest.raises(BadRequestError):
        sw1("https://gw/?" + "&".join(f"X-Sw-{i}=1" for i in range(100)), NOW)


def test_sw1_app_policy_parses_and_app_ids_are_checked() -> None:
    apps = parse_sw1_apps(
        json.dumps(
            {
                "apps": [
                    {"id": "a", "secret": "s", "proxy": "http://u/x"},
                    {
                        "id": "b",
                        "secret": "s",
                        "proxy": "http://u/x",
                        "models": ["m"],
                        "max_tokens": 50,
                        "max_lifetime": 600,
                        "rate_limit_per_minute": 5,
                        "url_rate_limit_per_minute": 2,
                    },
                ]
            }
        )
    )
    assert apps["a"].rate_limit_per_minute == 120 and apps["a"].url_rate_limit_per_minute == 20
    assert apps["b"].models == ("m",) and apps["b"].max_tokens == 50 and apps["b"].max_lifetime == 600
    for bad in ({"id": "a#b"}, {"id": "a", "max_tokens": "5"}, {"id": "a", "models": "m"}):
        with pytest.raises(ConfigError):
            parse_sw1_apps(json.dumps({"apps": [{"id": "a", "secret": "s", "proxy": "http://u/x", **bad}]}))


SECRETS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def _verify(headers: dict[str, str], body: bytes) -> object:
    return verify_sigv4(
        method="POST",
        raw_path="/sign",
        raw_query="",
        headers=[("Host", "127.0.0.1:9000"), *headers.items()],
        body=body,
        secrets=SECRETS,
        account_id="123456789012",
        service="lambda",
        region="us-east-1",
        now=datetime.now(UTC),
    )


def _sign(body: bytes, payload_header: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if payload_header is not None:
        headers["X-Amz-Content-SHA256"] = payload_header
    request = AWSRequest(method="POST", url="http://127.0.0.1:9000/sign", data=body, headers=headers)
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", SECRETS["AKIDEXAMPLE"]), "lambda", "us-east-1")
    if payload_header is not None:
        auth.payload = lambda request: payload_header  # type: ignore[method-assign]  # sign what the header says
    auth.add_auth(request)
    return dict(request.headers.items())


def test_the_payload_hash_is_always_the_bodys() -> None:
    body = b'{"subject": "a"}'
    assert _verify(_sign(body, None), body)  # botocore's default for Lambda: no header, the hash is in the signature
    assert _verify(_sign(body, hashlib.sha256(body).hexdigest()), body)
    with pytest.raises(SignatureError):
        _verify(_sign(body, "UNSIGNED-PAYLOAD"), body)  # a captured request would replay with any body
    with pytest.raises(SignatureError):
        _verify(_sign(body, hashlib.sha256(body).hexdigest()), b'{"subject": "b"}')
    with pytest.raises(SignatureError):
        _verify(_sign(body, None), b'{"subject": "b"}')


def test_errors_are_ours() -> None:
    assert issubclass(BadRequestError, SigstreamError)
