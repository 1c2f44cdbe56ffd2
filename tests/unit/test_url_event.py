"""Function URL payload 2.0 building, prelude parsing, buffered results and CORS."""

from __future__ import annotations

import base64
import json

import pytest

from local.url_event import (
    HttpRequest,
    PreludeError,
    PreludeReader,
    buffered_response,
    build_event,
    cors_headers,
    prelude_response,
)


def _event(**overrides):
    req = HttpRequest(
        method=overrides.get("method", "POST"),
        raw_path=overrides.get("raw_path", "/v1/chat/completions"),
        raw_query=overrides.get("raw_query", "a=1&a=2&b=x%20y"),
        headers=overrides.get(
            "headers",
            [("Content-Type", "application/json"), ("X-Dup", "1"), ("x-dup", "2"), ("Cookie", "c1=v1; c2=v2")],
        ),
        body=overrides.get("body", b'{"k":1}'),
        source_ip="127.0.0.1",
    )
    return build_event(
        req, url_id="abc", region="us-east-1", request_id="rid", now=1583348638.39, iam=overrides.get("iam")
    )


def test_headers_are_lowercased_duplicates_joined_and_cookies_split() -> None:
    event = _event()
    assert event["headers"]["x-dup"] == "1,2"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert event["headers"]["content-type"] == "application/json"


def test_query_is_raw_and_parsed_with_commas() -> None:
    event = _event()
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}


def test_request_context_shape() -> None:
    ctx = _event()["requestContext"]
    assert ctx["accountId"] == "anonymous" and "authorizer" not in ctx
    assert ctx["http"] == {
        "method": "POST",
        "path": "/v1/chat/completions",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "",
    }
    assert ctx["time"] == "04/Mar/2020:19:03:58 +0000" and ctx["timeEpoch"] == 1583348638390
    assert ctx["domainName"] == "abc.lambda-url.us-east-1.on.aws"


def test_iam_authorizer_is_included_for_aws_iam() -> None:
    iam = {"accessKey": "AK", "accountId": "111122223333"}
    ctx = _event(iam=iam)["requestContext"]
    assert ctx["authorizer"] == {"iam": iam} and ctx["accountId"] == "111122223333"


def test_text_body_is_a_string_and_binary_is_base64() -> None:
    assert _event()["body"] == '{"k":1}' and _event()["isBase64Encoded"] is False
    binary = _event(headers=[("content-type", "application/octet-stream")], body=b"\x00\xff")
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == b"\x00\xff"
    bad_utf8 = _event(headers=[("content-type", "application/json")], body=b"\xff\xfe")
    assert bad_utf8["isBase64Encoded"] is True


def test_empty_parts_are_omitted() -> None:
    event = _event(raw_query="", headers=[], body=b"")
    assert "body" not in event and "cookies" not in event and "queryStringParameters" not in event


def test_prelude_reader_handles_split_separator() -> None:
    reader = PreludeReader()
    assert reader.feed(b'{"statusCode":418,"headers":{"a":"b"},"cookies":["x=1"]}\x00\x00\x00') is None
    meta, rest = reader.feed(b"\x00\x00\x00\x00\x00body")  # type: ignore[misc]
    assert rest == b"body"
    response = prelude_response(meta)
    assert response.status == 418 and ("set-cookie", "x=1") in response.headers


def test_prelude_reader_rejects_garbage_and_oversize() -> None:
    with pytest.raises(PreludeError):
        PreludeReader().feed(b"not json" + b"\x00" * 8)
    with pytest.raises(PreludeError):
        PreludeReader().feed(b"x" * 70000)


def test_buffered_result_rules() -> None:
    response, body = buffered_response(b'{"statusCode":201,"body":"hi","cookies":["a=1"]}', "application/json")
    assert response.status == 201 and body == b"hi" and ("set-cookie", "a=1") in response.headers
    response, body = buffered_response(b'{"no":"status"}', "application/json")
    assert response.status == 200 and json.loads(body) == {"no": "status"}
    encoded = base64.b64encode(b"\x00\x01").decode()
    _, body = buffered_response(
        json.dumps({"statusCode": 200, "body": encoded, "isBase64Encoded": True}).encode(), "application/json"
    )
    assert body == b"\x00\x01"


def test_cors_rules() -> None:
    cors = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["POST"], "ExposeHeaders": ["x-a"], "MaxAge": 60}
    assert cors_headers(cors, "https://evil.example", preflight=False) == []
    assert ("access-control-allow-origin", "https://app.example") in cors_headers(cors, "https://app.example", False)
    preflight = dict(cors_headers(cors, "https://app.example", preflight=True))
    assert preflight["access-control-allow-methods"] == "POST" and preflight["access-control-max-age"] == "60"
    assert dict(cors_headers({"AllowOrigins": ["*"]}, "https://x.example", False))["access-control-allow-origin"] == "*"
