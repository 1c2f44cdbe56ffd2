"""Bad input over the real stack: always a 4xx JSON error naming the problem, never a 5xx or a trace."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from local.stack import LocalStack
from tests.helpers import http, new_subject, signed_url, table_items

CHAT = b'{"messages": [{"role": "user", "content": "hi"}]}'


def assert_clean_4xx(status: int, body: bytes, param: str | None = None, code: str | None = None) -> dict:
    assert 400 <= status < 500, (status, body[:300])
    assert b"Traceback" not in body and b'File "' not in body
    doc = json.loads(body)
    error = doc["error"]
    assert error["message"] and error["code"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def test_body_over_the_limit_is_413_before_anything_else(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject=new_subject())
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 1_100_000 + b'"}]}'
    status, _, body = http("POST", answer["url"], big, {"content-type": "application/json"})
    assert_clean_4xx(status, body, code="payload_too_large")
    assert status == 413 and table_items(app_stack, answer["conversation_id"]) == []


def test_bodies_over_six_megabytes_are_refused_at_the_function_url_without_being_read(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject=new_subject())
    parts = urlsplit(answer["url"])
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = (
            f"POST {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {7 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode())  # the body is never sent: the answer must not wait for it
        reply = b""
        while chunk := sock.recv(4096):  # the server answers, then closes (it will not read that body)
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b'"Message"' in reply


def test_binary_and_base64_bodies(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject=new_subject())
    status, _, body = http("POST", answer["url"], b"\x00\x01\x02binary", {"content-type": "application/octet-stream"})
    assert status == 415 and assert_clean_4xx(status, body, param="content-type")
    status, _, body = http(
        "POST", answer["url"], '{"messages": "\u00e9"}'.encode("utf-16"), {"content-type": "application/json"}
    )
    assert_clean_4xx(status, body, param="body")


@pytest.mark.parametrize(
    "doc,param",
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "user", "content": "x"}], "model": ["a"]}, "model"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": True}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "stream_options": 3}, "stream_options"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
    ],
)
def test_missing_or_wrong_typed_openai_fields(app_stack: LocalStack, doc: dict, param: str) -> None:
    answer = signed_url(app_stack, subject=new_subject())
    status, _, body = http("POST", answer["url"], json.dumps(doc).encode(), {"content-type": "application/json"})
    assert_clean_4xx(status, body, param=param)


def test_policy_violations(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject=new_subject(), model=["gpt-4o-mini", "local-echo-1"], max_tokens=10)
    status, _, body = http(
        "POST",
        answer["url"],
        json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}).encode(),
        {"content-type": "application/json"},
    )
    assert_clean_4xx(status, body, param="model", code="policy_violation")
    status, _, body = http(
        "POST",
        answer["url"],
        json.dumps(
            {"model": "local-echo-1", "max_completion_tokens": 11, "messages": [{"role": "user", "content": "x"}]}
        ).encode(),
        {"content-type": "application/json"},
    )
    assert_clean_4xx(status, body, param="max_completion_tokens", code="policy_violation")


@pytest.mark.parametrize(
    "mutate,param",
    [
        (lambda q: q + "&sub=other", "sub"),  # duplicated, conflicting
        (lambda q: q + "&kid=k1", "kid"),  # duplicated, same value: still refused
        (lambda q: q.replace("sub=", "sub=a%0D%0Ab"), "sub"),  # CRLF
        (lambda q: q.replace("sub=", "sub=%00"), "sub"),  # control character
        (lambda q: q.replace("&sig=", "&sig=%2525"), "sig"),  # double-encoded garbage
        (lambda q: q.replace("sv=1", "sv=01"), "sv"),
        (lambda q: q.replace("nbf=", "nbf=%2B"), "nbf"),
        (lambda q: q.replace("sv=1&", ""), "sv"),
        (lambda q: q + "&cid=" + "a" * 300, "cid"),  # over-long id
        (lambda q: q + "&cid=..%2F..%2Fetc", "cid"),  # traversal
        (lambda q: q.replace("kid=k1", "kid=%FF"), "query"),  # invalid UTF-8
    ],
)
def test_query_tricks_are_400s_naming_the_parameter(app_stack: LocalStack, mutate, param: str) -> None:
    answer = signed_url(app_stack, subject=new_subject(), stateless=True)
    base, _, query = answer["url"].partition("?")
    status, _, body = http("POST", f"{base}?{mutate(query)}", CHAT, {"content-type": "application/json"})
    assert status == 400
    assert_clean_4xx(status, body, param=param)


def test_encoding_variants_that_change_nothing_signed_are_accepted(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject="user-42", stateless=True)
    base, _, query = answer["url"].partition("?")
    status, _, _ = http(
        "POST", f"{base}?{query.replace('sub=user-42', 'sub=user%2D42')}", CHAT, {"content-type": "application/json"}
    )
    assert status == 200


@pytest.mark.parametrize(
    "path,status",
    [
        ("/v1/conversations/../chat/completions", 404),
        ("/v1/conversations/%2e%2e/messages", 400),  # a route, but unsigned: missing parameters
        ("/v1/conversations/" + "c" * 500 + "/messages", 400),
        ("//v1/chat/completions", 400),  # collapsed to /v1/chat/completions (unsigned)
        ("/v1/chat/completions/", 404),
    ],
)
def test_path_tricks(app_stack: LocalStack, path: str, status: int) -> None:
    base = app_stack.endpoints()["stream_url"].rstrip("/")
    got, _, body = http(
        "GET" if "messages" in path else "POST", base + path, CHAT, {"content-type": "application/json"}
    )
    assert got == status
    assert_clean_4xx(got, body)


def test_over_long_and_traversing_ids_are_refused_when_signing(app_stack: LocalStack) -> None:
    from tests.helpers import sign

    for cid in ("c" * 300, "../../etc/passwd", "conv\r\nx"):
        status, answer = sign(app_stack, {"subject": "u", "conversation_id": cid})
        assert status == 400 and answer["error"]["param"] == "conversation_id"
    status, answer = sign(app_stack, {"subject": "u", "method": "GET", "path": "/v1/conversations/../x/messages"})
    assert status == 400 and answer["error"]["param"] in ("path", "conversation_id")
