"""The local Function URL front is at least as strict as AWS: signed payloads, and a readable 413 for big bodies."""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx2
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.stack import LocalStack
from tests.helpers import http, new_subject, signed_url

BIG = 7 * 1024 * 1024


def _urllib(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _requests(url: str, body: bytes) -> tuple[int, bytes]:
    response = requests.post(url, data=body, headers={"content-type": "application/json"}, timeout=60)
    return response.status_code, response.content


def _requests_chunked(url: str, body: bytes) -> tuple[int, bytes]:
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    response = requests.post(url, data=chunks(), headers={"content-type": "application/json"}, timeout=60)
    return response.status_code, response.content


def _httpx(url: str, body: bytes) -> tuple[int, bytes]:
    response = httpx2.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    return response.status_code, response.content


@pytest.mark.parametrize(
    "client", [_urllib, _requests, _requests_chunked, _httpx], ids=["urllib", "requests", "requests-chunked", "httpx"]
)
def test_bodies_over_six_megabytes_get_a_413_the_client_can_read(
    app_stack: LocalStack, client: Callable[[str, bytes], tuple[int, bytes]]
) -> None:
    answer = signed_url(app_stack, subject=new_subject(), stateless=True)
    status, body = client(answer["url"], b"x" * BIG)
    assert status == 413 and json.loads(body) == {"Message": "Request must be smaller than 6291456 bytes"}
    # The front still serves the next request normally.
    status, _, _ = http(
        "POST",
        answer["url"],
        b'{"messages": [{"role": "user", "content": "hi"}]}',
        {"content-type": "application/json"},
    )
    assert status == 200


def test_a_declared_length_over_the_limit_is_answered_before_the_body_is_sent(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject=new_subject(), stateless=True)
    parts = urlsplit(answer["url"])
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = (
            f"POST {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Expect: 100-continue\r\nContent-Length: {BIG}\r\n\r\n"
        )
        sock.sendall(head.encode())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"100 Continue" not in reply


def test_malformed_framing_is_a_400_not_a_dropped_connection(app_stack: LocalStack) -> None:
    parts = urlsplit(app_stack.endpoints()["stream_url"])
    for head in (
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ):
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(head.encode())
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 400"), reply[:100]


def _sign_request(stack: LocalStack, body: bytes, payload: str | None) -> tuple[str, dict[str, str]]:
    endpoints = stack.endpoints()
    headers = {"content-type": "application/json"}
    if payload is not None:
        headers["X-Amz-Content-SHA256"] = payload
    request = AWSRequest(method="POST", url=endpoints["sign_url"] + "sign", data=body, headers=headers)
    auth = SigV4Auth(
        Credentials(endpoints["aws_access_key_id"], endpoints["aws_secret_access_key"]), "lambda", endpoints["region"]
    )
    if payload is not None:
        auth.payload = lambda request: payload  # type: ignore[method-assign]  # sign what the header claims
    auth.add_auth(request)
    return request.url, dict(request.headers.items())


def test_iam_urls_refuse_unsigned_payloads_so_a_captured_request_cannot_carry_another_body(
    app_stack: LocalStack,
) -> None:
    body = json.dumps({"subject": "alice"}).encode()
    url, headers = _sign_request(app_stack, body, "UNSIGNED-PAYLOAD")
    evil = json.dumps({"subject": "alice", "expires_in": 3600, "model": ["gpt-4o"]}).encode()
    for sent in (body, evil):
        status, _, answer = http("POST", url, sent, headers)
        assert status == 403 and json.loads(answer) == {"Message": "Forbidden"}
    url, headers = _sign_request(app_stack, body, hashlib.sha256(body).hexdigest())
    assert http("POST", url, body, headers)[0] == 200  # a declared hash that is the body's is fine
    assert http("POST", url, evil, headers)[0] == 403
    url, headers = _sign_request(app_stack, body, None)  # botocore's default for Lambda: hash in the signature only
    assert http("POST", url, body, headers)[0] == 200
    assert http("POST", url, evil, headers)[0] == 403


def test_head_answers_carry_no_body_so_a_kept_alive_connection_stays_in_step(app_stack: LocalStack) -> None:
    # A streamed answer to HEAD sent its chunked body anyway: http.client (urllib3, requests) reads no body after
    # HEAD, so the next answer on the connection began with "8c\r\n{...": a BadStatusLine, or someone else's bytes.
    import http.client

    split = urlsplit(app_stack.endpoints()["stream_url"])
    connection = http.client.HTTPConnection(split.hostname or "", split.port, timeout=30)
    try:
        connection.request("HEAD", "/v1/conversations")
        head = connection.getresponse()
        assert head.status == 405 and head.read() == b""
        connection.request("GET", "/no-such-route")
        after = connection.getresponse()
        assert after.status == 404 and json.loads(after.read())["error"]["code"] == "not_found"
    finally:
        connection.close()
