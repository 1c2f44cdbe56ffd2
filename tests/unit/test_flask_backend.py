"""The example backend as it runs in production: behind a load balancer that terminates TLS."""

from __future__ import annotations

import secrets
from typing import Any

from werkzeug.security import generate_password_hash

from examples.flask_backend.app import Config, create_app, sign_request

PUBLIC = "https://chat.example.com"
PASSPHRASE = secrets.token_urlsafe(12)  # (a literal one would be a finding for detect-secrets)


class RecordingSigner:
    """Answers every Sign request with a URL, and keeps the requests."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def sign(self, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.docs.append(doc)
        return 200, {"url": "https://stream.example/v1/conversations?sig=x"}


def _client(signer: RecordingSigner, **config: Any) -> Any:
    settings = Config(
        sign_url="https://sign.example/",
        region="us-east-1",
        stream_origin="https://stream.example",
        users={"alice": generate_password_hash(PASSPHRASE)},
        secret_key="k" * 64,
        secure_cookies=False,  # (the test client keeps Secure cookies off plain http; the flag is not under test)
        **config,
    )
    client = create_app(settings, signer).test_client()
    # What the app sees behind the load balancer: plain http, on the public host name.
    client.post("/login", data={"username": "alice", "password": PASSPHRASE}, base_url="http://chat.example.com")
    return client


def test_the_page_signs_behind_a_tls_terminating_proxy_when_the_public_origin_is_configured() -> None:
    signer = RecordingSigner()
    client = _client(signer, public_origin=PUBLIC)
    # The browser is on https://chat.example.com and sends that Origin with its POST (every browser does).
    answer = client.post(
        "/api/sign", json={"action": "list"}, headers={"Origin": PUBLIC}, base_url="http://chat.example.com"
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert signer.docs == [{"subject": "acct:alice", "method": "GET", "path": "/v1/conversations"}]


def test_another_origin_is_still_refused() -> None:
    signer = RecordingSigner()
    client = _client(signer, public_origin=PUBLIC)
    for origin in ("https://evil.example", "http://chat.example.com", "null"):
        answer = client.post(
            "/api/sign", json={"action": "list"}, headers={"Origin": origin}, base_url="http://chat.example.com"
        )
        assert answer.status_code == 403 and answer.get_json()["error"]["message"] == "cross-site request", origin
    assert signer.docs == []


def test_without_a_public_origin_the_request_host_is_the_origin() -> None:
    signer = RecordingSigner()
    client = _client(signer)
    ok = client.post(
        "/api/sign",
        json={"action": "list"},
        headers={"Origin": "http://chat.example.com"},
        base_url="http://chat.example.com",
    )
    refused = client.post(
        "/api/sign", json={"action": "list"}, headers={"Origin": PUBLIC}, base_url="http://chat.example.com"
    )
    assert (ok.status_code, refused.status_code) == (200, 403)


def test_the_public_origin_comes_from_the_environment() -> None:
    env = {"SIGSTREAM_SIGN_URL": "https://sign.example/", "BACKEND_PUBLIC_ORIGIN": PUBLIC + "/"}
    assert Config.from_env(env).public_origin == PUBLIC
    assert Config.from_env({"SIGSTREAM_SIGN_URL": "https://sign.example/"}).public_origin is None


def test_the_page_may_ask_to_stop_and_to_resume_a_reply_of_one_of_its_conversations() -> None:
    conversation = "conv_" + "a" * 24
    assert sign_request("acct:alice", {"action": "stop", "conversation_id": conversation}, 300) == {
        "subject": "acct:alice",
        "method": "POST",
        "path": f"/v1/conversations/{conversation}/stop",
    }
    assert sign_request("acct:alice", {"action": "stream", "conversation_id": conversation}, 300) == {
        "subject": "acct:alice",
        "method": "GET",
        "path": f"/v1/conversations/{conversation}/stream",
    }
    assert sign_request("acct:alice", {"action": "stop"}, 300) == "conversation_id is required"
    assert (
        sign_request("acct:alice", {"action": "stop", "conversation_id": "../x"}, 300) == "conversation_id is malformed"
    )
