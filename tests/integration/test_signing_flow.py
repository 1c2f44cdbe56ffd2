"""POST /sign over SigV4, URLs the Stream function accepts, refusals, and signway-sdk URLs in SW1 mode."""

from __future__ import annotations

import json
import random
import string
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from signway_sdk import sign_url

from local.stack import LocalStack
from tests.helpers import http, new_subject, sign, signed_url, sse_text, table_items, upstream_control

CHAT = {"model": "local-echo-1", "messages": [{"role": "user", "content": "hi"}]}


def post_chat(url: str, doc: dict | None = None) -> tuple[int, dict, bytes]:
    return http("POST", url, json.dumps(doc or CHAT).encode(), {"content-type": "application/json"})


def test_signed_backend_gets_a_url_the_stream_function_accepts(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject=new_subject())
    assert answer["url"].startswith(app_stack.endpoints()["stream_url"] + "v1/chat/completions?")
    assert answer["conversation_id"].startswith("conv_")
    assert answer["expires_at"].endswith("Z")
    status, _, body = post_chat(answer["url"])
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == "Echo (1 messages): hi"


def test_unsigned_sign_requests_are_refused(app_stack: LocalStack) -> None:
    status, answer = sign(app_stack, {"subject": "x"}, signed=False)
    assert status == 403 and answer == {"Message": "Forbidden"}


@pytest.mark.parametrize(
    "doc,param",
    [
        ({}, "subject"),
        ({"subject": "bad subject\r\n"}, "subject"),
        ({"subject": "a", "expires_in": 0}, "expires_in"),
        ({"subject": "a", "expires_in": 99999}, "expires_in"),
        ({"subject": "a", "path": "/etc/passwd"}, "path"),
        ({"subject": "a", "method": "GET"}, "method"),
        ({"subject": "a", "max_tokens": "many"}, "max_tokens"),
        ({"subject": "a", "surprise": 1}, "surprise"),
        ({"subject": "a", "stateless": True, "conversation_id": "conv_abcdefgh"}, "conversation_id"),
        ({"subject": "a", "model": []}, "model"),  # an empty allow-list signed a URL for every model
        ({"subject": "a", "model": "gpt-forbidden"}, "model"),  # the Stream function would refuse it later
        ({"subject": "a", "model": ["local-echo-1", "gpt-forbidden"]}, "model"),
    ],
)
def test_bad_sign_requests_are_400s_naming_the_field(app_stack: LocalStack, doc: dict, param: str) -> None:
    status, answer = sign(app_stack, doc)
    assert status == 400, answer
    assert answer["error"]["param"] == param


@pytest.mark.parametrize(
    "raw", [b"[" * 100_000 + b"]" * 100_000, b'{"subject": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001]
)
def test_deeply_nested_sign_bodies_are_400s_not_crashes(app_stack: LocalStack, raw: bytes) -> None:
    status, answer = sign(app_stack, {}, raw=raw)  # was a RecursionError: the function failed, the URL said 502
    assert status == 400 and answer["error"]["param"] == "body", answer


def test_url_for_conversation_a_is_refused_for_conversation_b(app_stack: LocalStack) -> None:
    subject = new_subject()
    a = signed_url(app_stack, subject=subject)
    b = signed_url(app_stack, subject=subject)
    forged = a["url"].replace(a["conversation_id"], b["conversation_id"])
    status, _, body = post_chat(forged)
    assert status == 403 and json.loads(body)["error"]["code"] == "invalid_signature"
    listing = signed_url(
        app_stack, subject=subject, method="GET", path=f"/v1/conversations/{a['conversation_id']}/messages"
    )
    other_path = listing["url"].replace(a["conversation_id"], b["conversation_id"])
    status, _, body = http("GET", other_path)
    assert status == 403 and json.loads(body)["error"]["code"] == "invalid_signature"
    assert table_items(app_stack, b["conversation_id"]) == []


def test_single_use_urls_work_once(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject=new_subject(), single_use=True)
    assert post_chat(answer["url"])[0] == 200
    status, _, body = post_chat(answer["url"])
    assert status == 403 and json.loads(body)["error"]["code"] == "already_used"


def test_tampered_and_expired_urls_are_refused_and_nothing_is_stored(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject=new_subject())
    params = dict(parse_qsl(urlsplit(answer["url"]).query))
    params["sig"] = params["sig"][:-1] + ("A" if params["sig"][-1] != "A" else "B")
    status, _, body = post_chat(answer["url"].split("?")[0] + "?" + urlencode(params))
    assert status == 403 and json.loads(body) == {
        "error": {
            "message": "The URL signature is not valid.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_signature",
        }
    }
    # An expired URL, signed with the real key an hour ago (the 30 s skew allowance is long past).
    from sigstream.core.settings import parse_signing_keys
    from sigstream.core.signed_url import Grant, sign_query

    assert app_stack.moto is not None
    keys_arn = next(
        s["ARN"]
        for s in app_stack.moto.client("secretsmanager").list_secrets()["SecretList"]
        if "SigningKeys" in s["Name"]
    )
    keys = parse_signing_keys(
        app_stack.moto.client("secretsmanager").get_secret_value(SecretId=keys_arn)["SecretString"]
    )
    now = int(datetime.now(UTC).timestamp())
    grant = Grant("POST", "/v1/chat/completions", "late-user", now - 3600, now - 3300, "conv_expired0000000000")
    url = (
        app_stack.endpoints()["stream_url"]
        + "v1/chat/completions?"
        + sign_query(grant, keys.active, keys.keys[keys.active])
    )
    status, _, body = post_chat(url)
    assert status == 403 and json.loads(body)["error"]["code"] == "expired"
    assert table_items(app_stack, answer["conversation_id"]) == []
    assert table_items(app_stack, "conv_expired0000000000") == []


def test_model_and_max_tokens_policies_are_enforced(app_stack: LocalStack) -> None:
    answer = signed_url(app_stack, subject=new_subject(), model="local-echo-1", max_tokens=50, stateless=True)
    status, _, body = post_chat(answer["url"], {**CHAT, "model": "gpt-5"})
    assert status == 403 and json.loads(body)["error"]["param"] == "model"
    answer = signed_url(app_stack, subject=new_subject(), model="local-echo-1", max_tokens=50, stateless=True)
    status, _, body = post_chat(answer["url"], {**CHAT, "max_tokens": 51})
    assert status == 403 and json.loads(body)["error"]["param"] == "max_tokens"


def _random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def test_signway_sdk_urls_stream_through_and_tampered_ones_are_refused(app_stack: LocalStack) -> None:
    """signway-sdk 0.1.3 output, within the subset where the SDK agrees with the server."""
    endpoints = app_stack.endpoints()
    app = endpoints["sw1_app"]
    proxy = endpoints["upstream_base_url"] + "/chat/completions"
    rng = random.Random(7)
    upstream_control(app_stack)
    for round_ in range(6):
        body = json.dumps(
            {"model": "local-echo-1", "stream": True, "messages": [{"role": "user", "content": _random_text(rng, 12)}]}
        )
        headers = {"Content-Type": "application/json"} if round_ % 2 else {}
        signed_body = body if round_ % 3 else None
        url = sign_url(
            id=app["id"],
            secret=app["secret"],
            host=endpoints["stream_url"],
            proxy_url=proxy,
            expiry=rng.randint(30, 600),
            method="POST",
            headers=dict(headers),
            body=signed_body,
            datetime_override=datetime.utcnow() - timedelta(seconds=rng.randint(0, 20)),
        )
        send_headers = {"content-type": "application/json", **headers}
        status, response_headers, data = http("POST", url, body.encode(), send_headers)
        assert status == 200, data
        assert response_headers["content-type"].startswith("text/event-stream")
        assert data.endswith(b"data: [DONE]\n\n") and sse_text(data).startswith("Echo (1 messages): ")
        tampered = url.replace("X-Sw-Expires=", "X-Sw-Expires=1")
        status, _, data = http("POST", tampered, body.encode(), send_headers)
        assert 400 <= status < 500, data
        if signed_body is not None:
            status, _, data = http("POST", url, body.replace("model", "modeL").encode(), send_headers)
            assert status == 403, data


def test_sw1_proxy_outside_the_allowlist_is_refused(app_stack: LocalStack) -> None:
    endpoints = app_stack.endpoints()
    app = endpoints["sw1_app"]
    url = sign_url(
        app["id"], app["secret"], endpoints["stream_url"], "http://169.254.169.254/latest/meta-data/", 60, "GET"
    )
    status, _, body = http("GET", url)
    assert status == 403 and json.loads(body)["error"]["code"] == "invalid_signature"


def test_sign_cli_prints_a_url_the_stream_function_accepts(app_stack: LocalStack) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "layers" / "core" / "python"),
        "SIGSTREAM_SIGNING_KEYS": app_stack.secret_values()["signing-keys"],
        "SIGSTREAM_STREAM_URL": app_stack.endpoints()["stream_url"],
    }
    result = subprocess.run(
        [sys.executable, "-m", "local", "sign", new_subject(), "--stateless", "--model", "local-echo-1", "--n", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(result.stdout)
    assert answer["query"]["models"] == "local-echo-1" and answer["conversation_id"] is None
    status, _, body = post_chat(answer["url"], {**CHAT, "n": 2})  # --n signs two choices per request
    assert status == 200, body
    assert answer["query"]["n"] == "2"  # without it a request for two choices is a 400 (test_cost_controls)
