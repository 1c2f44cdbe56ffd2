"""Faults injected on the local stack: upstream failures and stalls, DynamoDB and Secrets Manager trouble."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.aws_proxy import UNAVAILABLE, FaultPlan
from local.stack import LocalStack, StackOptions
from tests.conftest import RECORDED, ROOT
from tests.helpers import http, new_subject, signed_url, sse_events, sse_text, table_items, upstream_control

SHORT = {"UpstreamTimeout": "2", "UpstreamConnectTimeout": "1", "UpstreamMaxRetries": "1", "RateLimit": "1000"}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """template.yaml with short upstream timeouts and a fault-injecting proxy in front of moto."""
    s = LocalStack(
        StackOptions(
            root=ROOT, template=ROOT / "template.yaml", parameters=SHORT, aws_proxy=True, log_stream=io.StringIO()
        )
    )
    s.start()
    yield s
    s.stop()


def chat(url: str, text: str = "hello there", stream: bool = True) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"stream": stream, "messages": [{"role": "user", "content": text}]}).encode()
    return http("POST", url, body, {"content-type": "application/json"})


def messages(stack: LocalStack, cid: str) -> list[dict[str, Any]]:
    return sorted((i for i in table_items(stack, cid) if i["sk"]["S"].startswith("MSG#")), key=lambda i: i["sk"]["S"])


def logged(stack: LocalStack, text: str, wait: float = 5.0) -> bool:
    """Whether the stack logged `text`; metrics are flushed once the response has gone out, so allow a moment."""
    end = time.monotonic() + wait
    while not any(text in line for _, line in stack.logs.lines):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_read_timeout_before_the_first_token_is_a_504(stack: LocalStack) -> None:
    upstream_control(stack, stall_after=0, stall_seconds=3)
    answer = signed_url(stack, subject=new_subject())
    status, _, body = chat(answer["url"])
    assert status == 504 and json.loads(body)["error"]["code"] == "upstream_timeout"
    assert table_items(stack, answer["conversation_id"]) == []


def test_a_stream_that_stalls_mid_answer_ends_with_an_error_event_and_an_incomplete_reply(stack: LocalStack) -> None:
    upstream_control(stack, stall_after=4, stall_seconds=3)
    answer = signed_url(stack, subject=new_subject())
    status, _, body = chat(answer["url"], "one two three four five six")
    events = sse_events(body)
    assert status == 200 and events[-1] == b"data: [DONE]\n\n"
    assert json.loads(events[-2][6:])["error"]["code"] == "upstream_timeout"
    stored = messages(stack, answer["conversation_id"])
    assert stored[1]["status"]["S"] == "incomplete" and stored[1]["content"]["S"] == sse_text(body)


def test_malformed_sse_lines_are_dropped_and_counted(stack: LocalStack, tmp_path: Path) -> None:
    recorded = (RECORDED / "openai-sse" / "e2aad469b71d.sse").read_bytes().split(b"\n\n")
    broken = [*recorded[:3], b"data: {not json", b": a comment", b"event: ping", b"data: [1, 2", *recorded[3:]]
    replay = tmp_path / "broken.sse"
    replay.write_bytes(b"\n\n".join(broken))
    upstream_control(stack, replay=str(replay))
    answer = signed_url(stack, subject=new_subject(), stateless=True)
    status, _, body = chat(answer["url"])
    assert status == 200
    for event in sse_events(body):  # every forwarded event is valid JSON or [DONE]
        data = event[6:].strip()
        assert data == b"[DONE]" or isinstance(json.loads(data), dict)
    index = {e["file"]: e for e in json.loads((RECORDED / "openai-sse" / "index.json").read_text())}
    assert sse_text(body) == index["e2aad469b71d.sse"]["choice0_text"]
    assert logged(stack, '"MalformedUpstreamEvents"')


def test_dynamodb_throttling_is_retried(stack: LocalStack) -> None:
    upstream_control(stack)
    assert stack.aws_proxy is not None
    stack.aws_proxy.reset()
    stack.aws_proxy.inject(FaultPlan("UpdateItem", 2))  # the reservation, retried; then its settlement
    stack.aws_proxy.inject(FaultPlan("TransactWriteItems", 2))
    answer = signed_url(stack, subject=new_subject())
    status, _, body = chat(answer["url"])
    assert status == 200 and sse_text(body) == "Echo (1 messages): hello there"
    assert len(messages(stack, answer["conversation_id"])) == 2
    # The turn's first write (its messages and the reply in progress) is retried; then its final write.
    assert stack.aws_proxy.counts["UpdateItem"] == 3 + 1 and stack.aws_proxy.counts["TransactWriteItems"] == 3 + 1


def test_dynamodb_down_before_the_first_byte_is_a_clean_503(stack: LocalStack) -> None:
    upstream_control(stack)
    assert stack.aws_proxy is not None
    stack.aws_proxy.reset()
    stack.aws_proxy.inject(FaultPlan("UpdateItem", 50, 500, dict(UNAVAILABLE)))
    answer = signed_url(stack, subject=new_subject())
    status, headers, body = chat(answer["url"])
    stack.aws_proxy.reset()
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "service_unavailable" and b"Traceback" not in body
    assert upstream_requests_count(stack) == 0  # the provider was never called (and never billed)


def upstream_requests_count(stack: LocalStack) -> int:
    assert stack.upstream is not None
    return len(stack.upstream.control.requests)


def test_dynamodb_down_after_the_first_byte_leaves_no_half_written_conversation(stack: LocalStack) -> None:
    upstream_control(stack)
    assert stack.aws_proxy is not None
    stack.aws_proxy.reset()
    stack.aws_proxy.inject(FaultPlan("TransactWriteItems", 50))
    answer = signed_url(stack, subject=new_subject())
    status, _, body = chat(answer["url"])
    stack.aws_proxy.reset()
    assert status == 200 and sse_text(body) == "Echo (1 messages): hello there"  # the user still got the answer
    assert table_items(stack, answer["conversation_id"]) == []  # all-or-nothing: no message, no conversation item
    assert logged(stack, "could not store the turn") and logged(stack, '"HistoryWriteFailures"')


def test_secrets_manager_outage_after_warm_up_is_absorbed_by_the_cache(stack: LocalStack) -> None:
    upstream_control(stack)
    assert stack.aws_proxy is not None
    assert chat(signed_url(stack, subject=new_subject(), stateless=True)["url"])[0] == 200  # warm: secrets cached
    stack.aws_proxy.inject(FaultPlan("GetSecretValue", 1000, 500, dict(UNAVAILABLE)))
    try:
        status, _, body = chat(signed_url(stack, subject=new_subject(), stateless=True)["url"])
        assert status == 200, body
        stack.pools["StreamFunction"].recycle()  # a cold start while Secrets Manager is down
        status, _headers, body = chat(signed_url(stack, subject=new_subject(), stateless=True)["url"])
        assert status == 503 and json.loads(body)["error"]["code"] == "service_unavailable"
    finally:
        stack.aws_proxy.reset()


@pytest.fixture()
def blackhole() -> Iterator[str]:
    """A loopback port whose accept queue is full: connecting to it hangs (a connect timeout)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        with pytest.raises(OSError):
            probe.connect(("127.0.0.1", port))
    finally:
        probe.close()
    yield f"http://127.0.0.1:{port}/v1"
    for s in fillers:
        s.close()
    listener.close()


def test_upstream_connect_timeout_is_a_504(blackhole: str) -> None:
    s = LocalStack(
        StackOptions(
            root=ROOT,
            template=ROOT / "template.yaml",
            parameters=SHORT,
            upstream_base_url=blackhole,
            upstream_api_key="sk-test",
            log_stream=io.StringIO(),
        )
    )
    s.start()
    try:
        answer = signed_url(s, subject=new_subject(), stateless=True)
        started = time.monotonic()
        status, _, body = chat(answer["url"])
        assert status == 504 and json.loads(body)["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - started < 15  # connect timeout 1 s, one retry: bounded, not hanging
    finally:
        s.stop()
