"""awslambdaric runs unchanged under our Runtime API; AWS_IAM URLs verify SigV4 like AWS."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.aws import ACCESS_KEY, REGION, SECRET_KEY
from local.stack import LocalStack


def _send(url: str, method: str, path: str, body: bytes, headers: dict[str, str]):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response, response.read()


def _signed_headers(url: str, method: str, path: str, body: bytes, secret: str = SECRET_KEY) -> dict[str, str]:
    request = AWSRequest(
        method=method, url=url.rstrip("/") + path, data=body, headers={"content-type": "application/json"}
    )
    SigV4Auth(Credentials(ACCESS_KEY, secret), "lambda", REGION).add_auth(request)
    return dict(request.headers.items())


def test_awslambdaric_and_our_runtime_give_the_same_buffered_result(demo_stack: LocalStack) -> None:
    body = b'{"hello": "world"}'
    ric_url = demo_stack.urls["RicFunction"].url
    ours = _send(
        demo_stack.urls["BufferedFunction"].url, "POST", "/echo?x=1", body, {"content-type": "application/json"}
    )
    theirs = _send(ric_url, "POST", "/echo?x=1", body, _signed_headers(ric_url, "POST", "/echo?x=1", body))
    assert ours[0].status == theirs[0].status == 200
    assert json.loads(ours[1]) == json.loads(theirs[1]) == {"path": "/echo", "body": '{"hello": "world"}', "b64": False}
    for name in ("content-type", "x-route"):
        assert ours[0].getheader(name) == theirs[0].getheader(name)
    assert ours[0].msg.get_all("set-cookie") == theirs[0].msg.get_all("set-cookie") == ["a=1", "b=2"]


def test_awslambdaric_errors_are_reported_like_ours(demo_stack: LocalStack) -> None:
    ric_url = demo_stack.urls["RicFunction"].url
    theirs = _send(ric_url, "GET", "/raise", b"", _signed_headers(ric_url, "GET", "/raise", b""))
    ours = _send(demo_stack.urls["BufferedFunction"].url, "GET", "/raise", b"", {})
    assert ours[0].status == theirs[0].status == 502


def test_iam_url_passes_the_caller_to_the_event(demo_stack: LocalStack) -> None:
    ric_url = demo_stack.urls["RicFunction"].url
    response, body = _send(ric_url, "GET", "/context", b"", _signed_headers(ric_url, "GET", "/context", b""))
    assert response.status == 200
    iam = json.loads(body)["authorizer"]["iam"]
    assert iam["accessKey"] == ACCESS_KEY and iam["accountId"] == "123456789012"


def test_iam_url_refuses_unsigned_and_badly_signed_requests(demo_stack: LocalStack) -> None:
    ric_url = demo_stack.urls["RicFunction"].url
    before = demo_stack.pools["RicFunction"].invocations
    assert _send(ric_url, "GET", "/context", b"", {})[0].status == 403
    wrong = _signed_headers(ric_url, "GET", "/context", b"", secret="not-the-secret")
    assert _send(ric_url, "GET", "/context", b"", wrong)[0].status == 403
    signed_other_path = _signed_headers(ric_url, "GET", "/other", b"")
    assert _send(ric_url, "GET", "/context", b"", signed_other_path)[0].status == 403
    signed = _signed_headers(ric_url, "POST", "/echo", b"{}")
    assert _send(ric_url, "POST", "/echo", b'{"x":1}', signed)[0].status == 403  # body changed
    assert demo_stack.pools["RicFunction"].invocations == before


def test_botocore_session_is_importable_for_backends() -> None:
    # The Sign function is called by backends with plain botocore credentials, as above.
    assert botocore.session.get_session().get_component("event_emitter") is not None
