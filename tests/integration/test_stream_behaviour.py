"""Stream function behaviour beyond the happy path: concurrent turns, disconnects, moderation, budgets, coalescing."""

from __future__ import annotations

import http.client as httpclient
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.stack import LocalStack
from tests.helpers import http, new_subject, signed_url, sse_text, table_items, upstream_control


def post(url: str, text: str, stream: bool = False) -> tuple[int, bytes]:
    status, _, body = http(
        "POST",
        url,
        json.dumps({"stream": stream, "messages": [{"role": "user", "content": text}]}).encode(),
        {"content-type": "application/json"},
    )
    return status, body


def stored(stack: LocalStack, conversation_id: str) -> list[dict[str, Any]]:
    items = sorted(
        (i for i in table_items(stack, conversation_id) if i["sk"]["S"].startswith("MSG#")), key=lambda i: i["sk"]["S"]
    )
    return [
        {"role": i["role"]["S"], "content": i.get("content", {}).get("S"), "status": i["status"]["S"]} for i in items
    ]


def test_concurrent_turns_in_one_conversation_never_interleave_or_lose_messages(app_stack: LocalStack) -> None:
    upstream_control(app_stack, delay_ms=30)
    subject = new_subject()
    first = signed_url(app_stack, subject=subject)
    cid = first["conversation_id"]
    assert post(first["url"], "opening")[0] == 200
    urls = [signed_url(app_stack, subject=subject, conversation_id=cid)["url"] for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda pair: post(pair[1], f"turn {pair[0]}", stream=True), enumerate(urls)))
    assert [r[0] for r in results] == [200] * 4
    messages = stored(app_stack, cid)
    assert len(messages) == 10  # opening pair + four pairs, each exactly once
    for user, assistant in zip(messages[0::2], messages[1::2], strict=True):
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert assistant["content"].endswith(user["content"])  # each reply sits right after its own question


def test_a_client_that_disconnects_still_gets_its_turn_stored(app_stack: LocalStack) -> None:
    upstream_control(app_stack, delay_ms=200)  # ~2.6 s: still answering when the history is read
    answer = signed_url(app_stack, subject=new_subject())
    parts = urlsplit(answer["url"])
    conn = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=30)
    text = "one two three four five six seven eight nine ten"
    conn.request(
        "POST",
        f"{parts.path}?{parts.query}",
        json.dumps({"stream": True, "messages": [{"role": "user", "content": text}]}),
        {"content-type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 200 and response.read1(100)
    conn.sock.close()  # the browser tab went away mid-answer
    deadline = time.monotonic() + 20
    messages = stored(app_stack, answer["conversation_id"])
    while len(messages) < 2 and time.monotonic() < deadline:  # the first write runs beside the provider call
        time.sleep(0.05)
        messages = stored(app_stack, answer["conversation_id"])
    assert [m["status"] for m in messages] == ["complete", "in_progress"]  # visible from the turn's start
    while time.monotonic() < deadline and stored(app_stack, answer["conversation_id"])[1]["status"] == "in_progress":
        time.sleep(0.2)
    messages = stored(app_stack, answer["conversation_id"])
    # Not a stop: the local front keeps draining the function's stream, as AWS does, and the turn ends complete.
    assert messages[1] == {"role": "assistant", "content": f"Echo (1 messages): {text}", "status": "complete"}


@pytest.fixture()
def inprocess(app_stack: LocalStack) -> Iterator[Any]:
    """The Stream app in-process (real moto and upstream), with settings a test chooses."""
    from stream_app.app import build_app

    pool = app_stack.pools["StreamFunction"]

    def make(**settings: str) -> Any:
        env = {**pool.spec.environment, **pool.aws_env, "AWS_REGION": "us-east-1"}
        env.update({f"SIGSTREAM_{k.upper()}": v for k, v in settings.items()})
        return build_app(env, time.time)

    yield make


def event_for(answer: dict[str, Any], text: str, stream: bool = True) -> dict[str, Any]:
    from local.url_event import HttpRequest, build_event

    path, _, query = answer["url"].split("/", 3)[3].partition("?")
    body = json.dumps({"stream": stream, "messages": [{"role": "user", "content": text}]}).encode()
    return build_event(
        HttpRequest("POST", "/" + path, query, [("content-type", "application/json")], body, "127.0.0.1"),
        url_id="t",
        region="us-east-1",
        request_id="r",
        now=time.time(),
        iam=None,
    )


def run(app: Any, event: dict[str, Any]) -> tuple[int, list[bytes]]:
    result = app.handle(event)
    return result.status, list(result.body)


def test_moderation_blocks_flagged_input_and_fails_closed_or_open(app_stack: LocalStack, inprocess: Any) -> None:
    upstream_control(app_stack)
    closed = inprocess(moderation="fail-closed")
    status, body = run(
        closed, event_for(signed_url(app_stack, subject=new_subject(), stateless=True), "please FLAG_ME now")
    )
    assert status == 400 and json.loads(body[0])["error"]["message"] == "the message was flagged by moderation"
    upstream_control(app_stack, faults=[{"endpoint": "moderations", "status": 500}] * 4)
    status, body = run(closed, event_for(signed_url(app_stack, subject=new_subject(), stateless=True), "hello"))
    assert status == 503 and json.loads(body[0])["error"]["code"] == "service_unavailable"
    upstream_control(app_stack, faults=[{"endpoint": "moderations", "status": 500}] * 4)
    opened = inprocess(moderation="fail-open")
    status, body = run(opened, event_for(signed_url(app_stack, subject=new_subject(), stateless=True), "hello"))
    assert status == 200 and sse_text(b"".join(body)) == "Echo (1 messages): hello"


def test_coalescing_merges_chunks_but_never_buffers_the_whole_answer(app_stack: LocalStack, inprocess: Any) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    upstream_control(app_stack, delay_ms=10, reply=words)
    status, plain = run(
        inprocess(coalesce_ms="0"), event_for(signed_url(app_stack, subject=new_subject(), stateless=True), "x")
    )
    upstream_control(app_stack, delay_ms=10, reply=words)
    status2, merged = run(
        inprocess(coalesce_ms="100"), event_for(signed_url(app_stack, subject=new_subject(), stateless=True), "x")
    )
    assert status == status2 == 200
    assert sse_text(b"".join(plain)) == sse_text(b"".join(merged)) == words
    assert len(merged) < len(plain) / 3  # fewer, larger writes...
    assert len(merged) >= 3  # ...but still several: the answer is never held back whole
