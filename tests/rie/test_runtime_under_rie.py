"""The streaming runtime under the RIE: mid-stream errors that the RIE's dropped trailers would hide,
`sam local invoke -d` (the managed bootstrap without our exec wrapper), and AWS_LAMBDA_MAX_CONCURRENCY.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from local.event_prep import prepare_event
from local.stack import LocalStack
from local.url_caller import url_caller
from sigstream_runtime.response import BUFFERED_WARNING
from tests.conftest import DEMO, ROOT
from tests.helpers import sse_events, sse_text
from tests.rie.conftest import IN_CI, StartFunction
from tests.rie.harness import RieFunction, RieResponse, free_port

DEMO_TEMPLATE = DEMO / "template.yaml"  # run unbuilt, from its CodeUri, as `sam local invoke -t` can


def _demo_event(path: str) -> bytes:
    return json.dumps(
        {"version": "2.0", "rawPath": path, "requestContext": {"requestId": "rie"}, "headers": {}}
    ).encode()


def _event(stack: LocalStack, name: str) -> bytes:
    call = url_caller(stack.endpoints()["stream_url"])
    return prepare_event((ROOT / "events" / name).read_bytes(), stack.secret_values(), stack.sw1_app["proxy"], call)


@pytest.fixture(scope="module")
def demo_streamer(start_function: StartFunction) -> RieFunction:
    return start_function("StreamerFunction", template=DEMO_TEMPLATE)


def test_a_mid_stream_exception_shows_in_the_body_the_rie_returns(demo_streamer: RieFunction) -> None:
    """The RIE drops the error trailers (a plain 200 with a truncated body); the SSE error event survives."""
    answer = demo_streamer.invoke(_demo_event("/boom-mid-sse"))
    assert answer.rie_status == 200 and answer.status == 200 and answer.error is None  # what the RIE makes of it
    assert answer.body.startswith(b"data: one\n\ndata: half-writ\n\nevent: error\ndata: ")
    notice = json.loads(answer.body.split(b"event: error\ndata: ", 1)[1])
    assert notice["error"]["type"] == "Function.RuntimeError"
    assert "exploded mid-stream" in demo_streamer.logs()  # the message and stack trace are in the log only
    assert b"exploded" not in answer.body


def test_plain_text_streams_get_no_in_band_notice(demo_streamer: RieFunction) -> None:
    answer = demo_streamer.invoke(_demo_event("/boom-mid"))
    assert answer.body == b"first part\nsecond part\n"  # text/plain has no way to carry one: left unchanged


def _debug_port() -> int:
    return free_port()


def test_sam_local_invoke_debug_buffers_a_streaming_response_with_a_warning(
    start_function: StartFunction, sam_env_file: Path, rie_stack: LocalStack
) -> None:
    """`-d` runs /var/runtime/bootstrap.py (awslambdaric) directly: the StreamingResponse becomes a buffered
    Function URL response instead of Runtime.MarshalError, and the log says why.
    """
    debug = start_function("StreamFunction", sam_env_file, debug_port=_debug_port())
    assert debug.config["entrypoint"][-2:] == ["/var/lang/bin/python3.12", "/var/runtime/bootstrap.py"]
    answer = debug.invoke(_event(rie_stack, "stream-chat-valid.json"))
    assert answer.error is None, answer.raw[:500]
    assert not answer.streamed and answer.status == 200  # a buffered {"statusCode", "headers", "body"} result
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.body.endswith(b"data: [DONE]\n\n")
    assert re.match(r"Echo \(\d+ messages\): Write a haiku", sse_text(answer.body))
    assert BUFFERED_WARNING in debug.logs()
    refused = debug.invoke(_event(rie_stack, "stream-chat-expired.json"))
    assert refused.status == 403 and json.loads(refused.body)["error"]["code"] == "expired"


def test_debug_mode_keeps_error_semantics_of_the_streaming_runtime(start_function: StartFunction) -> None:
    debug = start_function("StreamerFunction", template=DEMO_TEMPLATE, debug_port=_debug_port())
    streamed = debug.invoke(
        json.dumps(
            {
                "version": "2.0",
                "rawPath": "/ticks",
                "queryStringParameters": {"n": "3", "interval": "0"},
                "requestContext": {"requestId": "rie"},
                "headers": {},
            }
        ).encode()
    )
    assert (streamed.status, streamed.headers["x-demo"], streamed.body.count(b"tick")) == (201, "1", 3)
    mid = debug.invoke(_demo_event("/boom-mid-sse"))
    assert mid.status == 200 and b"event: error\ndata: " in mid.body  # as the streaming runtime reports it
    before = debug.invoke(_demo_event("/boom-before"))
    assert before.error is not None and "exploded before the first byte" in str(before.error["errorMessage"])


def _chat(stack: LocalStack, subject: str) -> bytes:
    event = json.loads((ROOT / "events" / "stream-chat-valid.json").read_text())
    event["rawQueryString"] = event["rawQueryString"].replace("sub=user-42", f"sub={subject}")
    event["rawQueryString"] = event["rawQueryString"].replace("cid=conv_exampleConversation01&", "")
    call = url_caller(stack.endpoints()["stream_url"])
    return prepare_event(json.dumps(event).encode(), stack.secret_values(), stack.sw1_app["proxy"], call)


def test_four_concurrent_streaming_chats_complete_with_max_concurrency_4(
    start_function: StartFunction, sam_env_file: Path, rie_stack: LocalStack
) -> None:
    """Lambda Managed Instances: one environment, AWS_LAMBDA_MAX_CONCURRENCY=4 (SAM sets it for a function
    with a capacity provider); the RIE switches to its multi-concurrency mode and four chats stream at once.
    """
    if os.geteuid() != 0:
        message = "root: the multi-concurrency RIE runs the runtime as uid 993, as Lambda does"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    container = start_function("StreamFunction", sam_env_file, extra_env={"AWS_LAMBDA_MAX_CONCURRENCY": "4"})
    deadline = time.monotonic() + 60
    while True:  # the RIE answers Runtime.Unavailable until the workers are up; a client would retry
        warm = container.invoke(_event(rie_stack, "stream-chat-expired.json"), timeout=30)
        if warm.rie_status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert warm.status == 403, warm.raw[:300]
    assert rie_stack.upstream is not None
    rie_stack.upstream.control.update({"delay_ms": 150})  # long enough that the four overlap
    answers: dict[int, RieResponse] = {}
    failures: dict[int, str] = {}
    events = {i: _chat(rie_stack, f"user-lmi-{i}") for i in range(4)}

    def chat(index: int) -> None:
        try:
            answers[index] = container.invoke(events[index], timeout=20)
        except OSError as exc:  # a hung worker: the read times out
            failures[index] = repr(exc)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        rie_stack.upstream.control.update({"delay_ms": 0})
    assert not failures and sorted(answers) == [0, 1, 2, 3], (failures, container.logs()[-3000:])
    for answer in answers.values():
        assert answer.status == 200 and answer.body.endswith(b"data: [DONE]\n\n"), answer.raw[:300]
        assert not [e for e in sse_events(answer.body) if b'"error"' in e]
    # They ran at once: every START was logged before the first END.
    order = [line.split()[0] for line in container.logs().splitlines() if line.startswith(("START", "END"))]
    chats = order[order.index("END") + 1 :]  # after the warm-up
    assert chats[:4] == ["START"] * 4, order
