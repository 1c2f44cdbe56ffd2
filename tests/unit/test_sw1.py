"""SW1-HMAC-SHA256 verification against the shared vectors, tampering, and hostile input."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigstream.core.errors import (
    BadRequestError,
    ExpiredError,
    InvalidSignatureError,
    PayloadTooLargeError,
    SigstreamError,
)
from sigstream.core.sw1 import Sw1App, verify_sw1
from stream_app.sw1_proxy import _normalise

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "recorded" / "signway-sw1-vectors.json"
DATA = json.loads(FIXTURE.read_text())
VECTORS = DATA["vectors"]


def run(
    vector: dict,
    *,
    query: str | None = None,
    method: str | None = None,
    headers=None,
    body=None,
    now=None,
    allow=("*",),
    max_body: int = 1 << 20,
):
    request = vector["request"]
    raw_body = (request["body"] if body is None else body) or ""
    data = raw_body.encode() if isinstance(raw_body, str) else raw_body
    app = Sw1App(vector["id"], vector["secret"], tuple(allow))
    return verify_sw1(
        method=method or request["method"],
        raw_query=query if query is not None else urlsplit(request["path_and_query"]).query,
        headers=request["headers"] if headers is None else headers,
        read_body=lambda limit: data[: limit + 1],
        apps={vector["id"]: app},
        normalise_url=_normalise,
        now=request["now_unix"] if now is None else now,
        max_body=max_body,
    )


def params_of(vector: dict) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(vector["request"]["path_and_query"]).query, keep_blank_values=True))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_every_shared_vector_is_accepted(vector: dict) -> None:
    grant, body = run(vector)
    assert grant.proxy_url == _normalise(vector["inputs"]["proxy_url"])
    assert (body is not None) == (params_of(vector)["X-Sw-Body"] == "true")


@pytest.mark.parametrize("vector", DATA["sdk_server_divergent"], ids=[v["name"] for v in DATA["sdk_server_divergent"]])
def test_sdk_server_divergent_inputs_are_refused_like_the_server(vector: dict) -> None:
    # fixtures/README.md: the Signway server rejects these SDK-signed URLs; byte-exact means we do too.
    with pytest.raises(InvalidSignatureError):
        run(vector)


SIGNED_BODY = next(v for v in VECTORS if v["name"] == "V5-put-headers-body-query")


@pytest.mark.parametrize(
    "name,value",
    [
        ("X-Sw-Proxy", "https://example.com/a/b?x=1&y=3"),
        ("X-Sw-Credential", "other-idx/20240229"),
        ("X-Sw-Date", "20240229T000001Z"),
        ("X-Sw-Expires", "3601"),
        ("X-Sw-SignedHeaders", "x-trace"),
        ("X-Sw-Body", "false"),
        ("X-Sw-Signature", "0" * 64),
    ],
)
def test_each_parameter_is_bound(name: str, value: str) -> None:
    params = params_of(SIGNED_BODY) | {name: value}
    with pytest.raises((InvalidSignatureError, BadRequestError)) as err:
        run(SIGNED_BODY, query=urlencode(params))
    assert err.value.code in ("invalid_signature", "invalid_request")


def test_signature_is_case_sensitive() -> None:
    params = params_of(SIGNED_BODY)
    params["X-Sw-Signature"] = params["X-Sw-Signature"].upper()
    with pytest.raises(InvalidSignatureError):
        run(SIGNED_BODY, query=urlencode(params))


def test_body_signed_header_value_and_method_are_bound() -> None:
    with pytest.raises(InvalidSignatureError):
        run(SIGNED_BODY, body="hellO")
    with pytest.raises(InvalidSignatureError):
        run(SIGNED_BODY, headers=[("X-Trace", "abd"), ("Content-Length", "5")])
    with pytest.raises(InvalidSignatureError):
        run(SIGNED_BODY, method="POST")
    # Surrounding whitespace is trimmed before signing (as the server does) and an unsigned header is free.
    assert run(SIGNED_BODY, headers=[("x-trace", "  abc "), ("Content-Length", "5"), ("X-Other", "1")])


def test_expiry_is_inclusive_at_the_second() -> None:
    params = params_of(SIGNED_BODY)
    edge = 1709164800 + 3600  # X-Sw-Date + X-Sw-Expires
    assert run(SIGNED_BODY, now=edge)
    assert run(SIGNED_BODY, now=edge - 1)
    with pytest.raises(ExpiredError):
        run(SIGNED_BODY, now=edge + 1)
    with pytest.raises(ExpiredError):
        run(SIGNED_BODY, now=edge + 0.001)
    assert params["X-Sw-Expires"] == "3600"


def test_missing_signed_header_and_unknown_app() -> None:
    with pytest.raises(BadRequestError) as err:
        run(SIGNED_BODY, headers=[("Content-Length", "5")])
    assert err.value.param == "X-Sw-SignedHeaders"
    vector = dict(SIGNED_BODY, id="someone-else")
    with pytest.raises(InvalidSignatureError):
        run(vector)


def test_proxy_must_be_allowlisted() -> None:
    with pytest.raises(InvalidSignatureError):
        run(SIGNED_BODY, allow=("https://api.openai.com/v1/chat/completions",))
    assert run(SIGNED_BODY, allow=("https://example.com/a/*",))


def test_body_is_capped_before_reading() -> None:
    reads: list[int] = []

    def reader(limit: int) -> bytes:
        reads.append(limit)
        return b"x" * limit

    with pytest.raises(PayloadTooLargeError):
        verify_sw1(
            method="PUT",
            raw_query=urlsplit(SIGNED_BODY["request"]["path_and_query"]).query,
            headers=[("X-Trace", "abc"), ("Content-Length", "999999999")],
            read_body=reader,
            apps={SIGNED_BODY["id"]: Sw1App(SIGNED_BODY["id"], SIGNED_BODY["secret"], ("*",))},
            normalise_url=_normalise,
            now=SIGNED_BODY["request"]["now_unix"],
            max_body=1024,
        )
    assert reads == []


@pytest.mark.parametrize(
    "name,value,param",
    [
        ("X-Sw-Date", "99991231T235959Z", None),  # near year 9999: no overflow crash
        ("X-Sw-Expires", "4294967295", None),
        ("X-Sw-Expires", "4294967296", "X-Sw-Expires"),
        ("X-Sw-Expires", "9" * 400, "X-Sw-Expires"),
        ("X-Sw-Expires", "-1", "X-Sw-Expires"),
        ("X-Sw-Date", "20230230T000000Z", "X-Sw-Date"),
        ("X-Sw-Date", "2023-06-19T19:52:22Z", "X-Sw-Date"),
        ("X-Sw-Proxy", "not a url", "X-Sw-Proxy"),
        ("X-Sw-Proxy", "file:///etc/passwd", "X-Sw-Proxy"),
        ("X-Sw-Credential", "/20230619", "X-Sw-Credential"),
        ("X-Sw-SignedHeaders", "bad header", "X-Sw-SignedHeaders"),
    ],
)
def test_hostile_values_never_crash(name: str, value: str, param: str | None) -> None:
    params = params_of(SIGNED_BODY) | {name: value}
    try:
        run(SIGNED_BODY, query=urlencode(params))
    except BadRequestError as err:
        assert err.param == param
    except SigstreamError as err:
        assert param is None, err


def test_non_ascii_signed_header_is_a_clean_400() -> None:
    with pytest.raises(BadRequestError):
        run(SIGNED_BODY, headers=[("X-Trace", "caf\u00e9"), ("Content-Length", "5")])


def test_leading_plus_and_zeros_in_expires_are_accepted_as_the_server_does() -> None:
    params = params_of(SIGNED_BODY) | {"X-Sw-Expires": "+0003600"}
    assert run(SIGNED_BODY, query=urlencode(params))


@given(
    st.text(max_size=400),
    st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=5),
    st.binary(max_size=64),
)
def test_arbitrary_input_never_raises_anything_but_our_errors(query, headers, body) -> None:
    try:
        run(SIGNED_BODY, query=query, headers=headers, body=body)
    except SigstreamError:
        pass


@given(st.dictionaries(st.sampled_from(sorted(params_of(SIGNED_BODY))), st.text(max_size=60)))
def test_structured_garbage_never_raises_anything_but_our_errors(overrides) -> None:
    try:
        run(SIGNED_BODY, query=urlencode(params_of(SIGNED_BODY) | overrides))
    except SigstreamError:
        pass


def test_the_pass_through_keeps_the_content_encoding_of_the_bytes_it_relays() -> None:
    """A provider that compresses despite `accept-encoding: identity`: the client gets the header to decode with."""
    import gzip
    import threading
    from datetime import UTC, datetime
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from types import SimpleNamespace
    from typing import Any

    from signway_sdk import sign_url

    from stream_app.adapters.upstream_client import UpstreamClient
    from stream_app.http_io import Request
    from stream_app.sw1_proxy import sw1_proxy

    packed = gzip.compress(b'data: {"choices":[]}\n\ndata: [DONE]\n\n')

    class Compressing(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            for name, value in (("Content-Type", "text/event-stream"), ("Content-Encoding", "gzip")):
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Compressing)
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    try:
        upstream_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1/chat"
        app = Sw1App("app", "app-secret-0123456789", (upstream_url,))
        now = datetime.now(UTC)
        url = sign_url(app.id, app.secret, "https://gw/", upstream_url, 60, "GET", datetime_override=now)
        store: Any = SimpleNamespace(reserve=lambda *args: None)
        result = sw1_proxy(
            Request(method="GET", path="/", raw_query=urlsplit(url).query, headers={}, body=b"", request_id="r"),
            {app.id: app},
            store,
            now=now.timestamp(),
            max_lifetime=3600,
            skew=30,
            max_body=1024,
            timeout=5,
            connect_timeout=1,
            upstream=UpstreamClient("http://unused", timeout=5, connect_timeout=1, max_retries=0),
        )
        assert result.status == 200 and result.headers["content-encoding"] == "gzip"
        assert b"".join(result.body) == packed
    finally:
        httpd.shutdown()
        httpd.server_close()
