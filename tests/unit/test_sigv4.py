"""Local SigV4 verification agrees with botocore's signer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.sigv4 import SignatureError, verify_sigv4

SECRETS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def _signed(method: str, url: str, body: bytes, token: str | None = None) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials("AKIDEXAMPLE", SECRETS["AKIDEXAMPLE"], token), "lambda", "us-east-1").add_auth(request)
    return request


def _verify(request: AWSRequest, path: str, query: str, body: bytes, now: datetime | None = None, **kw):
    headers = [("Host", "127.0.0.1:9000"), *request.headers.items()]
    return verify_sigv4(
        method=request.method,
        raw_path=path,
        raw_query=query,
        headers=headers,
        body=body,
        secrets=SECRETS,
        account_id="123456789012",
        service=kw.get("service", "lambda"),
        region="us-east-1",
        now=now or datetime.now(UTC),
    )


@pytest.mark.parametrize(
    "path,query",
    [("/sign", ""), ("/", "b=2&a=1&a=0"), ("/a%20b/c", "x=%2F&empty="), ("/v1/chat/completions", "k=v+w")],
)
def test_botocore_signatures_verify(path: str, query: str) -> None:
    body = b'{"subject":"u1"}'
    url = f"http://127.0.0.1:9000{path}" + (f"?{query}" if query else "")
    caller = _verify(_signed("POST", url, body), path, query, body)
    assert caller.access_key == "AKIDEXAMPLE"


def test_session_token_is_signed_too() -> None:
    request = _signed("GET", "http://127.0.0.1:9000/x", b"", token="tok")
    assert _verify(request, "/x", "", b"").account_id == "123456789012"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r, p, q, b: (r, p, q, b + b" "),
        lambda r, p, q, b: (r, "/other", q, b),
        lambda r, p, q, b: (r, p, "a=2", b),
    ],
)
def test_tampering_is_rejected(mutate) -> None:
    body = b"{}"
    request = _signed("POST", "http://127.0.0.1:9000/sign?a=1", body)
    r, p, q, b = mutate(request, "/sign", "a=1", body)
    with pytest.raises(SignatureError):
        _verify(r, p, q, b)


def test_old_signatures_and_wrong_service_are_rejected() -> None:
    request = _signed("GET", "http://127.0.0.1:9000/", b"")
    with pytest.raises(SignatureError):
        _verify(request, "/", "", b"", now=datetime.now(UTC) + timedelta(minutes=16))
    with pytest.raises(SignatureError):
        _verify(request, "/", "", b"", service="s3")


def test_missing_authorization_is_rejected() -> None:
    with pytest.raises(SignatureError):
        verify_sigv4(
            method="GET",
            raw_path="/",
            raw_query="",
            headers=[],
            body=b"",
            secrets=SECRETS,
            account_id="1",
            service="lambda",
            region="us-east-1",
            now=datetime.now(UTC),
        )
