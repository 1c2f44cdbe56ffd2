"""AWS_LAMBDA_MAX_CONCURRENCY=4 on the local stack: one environment, four forked workers, the real Stream function."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from local.stack import LocalStack, StackError, StackOptions, options_from_env
from tests.conftest import ROOT
from tests.helpers import http, new_subject, signed_url, sse_events, table_items, upstream_control

WORKERS = 4
STREAM_TIMEOUT = 8  # seconds: the Stream function's Timeout here, so a test can outlast it


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """template.yaml with every function serving four invocations per environment (and a short Stream timeout)."""
    text = (ROOT / "template.yaml").read_text()
    stream = text.index("  StreamFunction:\n")
    at = text.index("      Timeout: 300\n", stream)
    template = tmp_path_factory.mktemp("lmi") / "template.yaml"
    template.write_text(text[:at] + f"      Timeout: {STREAM_TIMEOUT}\n" + text[at + len("      Timeout: 300\n") :])
    s = LocalStack(StackOptions(root=ROOT, template=template, max_concurrency=WORKERS, log_stream=io.StringIO()))
    s.start()
    yield s
    s.stop()


def _all_idle(stack: LocalStack) -> None:
    pool = stack.pools["StreamFunction"]
    deadline = time.monotonic() + 30
    while pool.idle_slots < WORKERS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pool.idle_slots == WORKERS


def _chat(answer: dict[str, object], text: str) -> tuple[int, bytes, float]:
    body = json.dumps({"stream": True, "messages": [{"role": "user", "content": text}]}).encode()
    started = time.monotonic()
    status, _, data = http("POST", str(answer["url"]), body, {"content-type": "application/json"})
    return status, data, time.monotonic() - started


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_four_workers_stream_four_chats_at_once_and_all_complete(stack: LocalStack) -> None:
    pool = stack.pools["StreamFunction"]
    assert pool.slots == WORKERS
    upstream_control(stack)
    warm = signed_url(stack, subject=new_subject(), stateless=True)
    client = openai.OpenAI(base_url=warm["base_url"], api_key="unused", default_query=warm["query"], max_retries=0)
    client.chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": "warm up"}])
    deadline = time.monotonic() + 30
    while pool.idle_slots < WORKERS and time.monotonic() < deadline:
        time.sleep(0.02)  # every worker is in /next: all four forked and initialised
    assert pool.idle_slots == WORKERS
    environment = pool.environments[0]
    assert len(_children(environment.process.pid)) == WORKERS - 1  # the runtime forked three workers

    # 20 tokens at 40 ms each: a stream lasts about 0.8 s, so served one after another they could not overlap.
    upstream_control(stack, delay_ms=40)
    words = " ".join(f"w{i}" for i in range(19))
    answers = [signed_url(stack, subject=new_subject()) for _ in range(WORKERS)]
    barrier = threading.Barrier(WORKERS)

    def chat(answer: dict[str, object]) -> tuple[float, float, str]:
        sdk = openai.OpenAI(
            base_url=str(answer["base_url"]), api_key="unused", default_query=answer["query"], max_retries=0, timeout=60
        )
        barrier.wait()
        stream = sdk.chat.completions.create(
            model="local-echo-1", messages=[{"role": "user", "content": words}], stream=True
        )
        first, text = 0.0, ""
        for chunk in stream:
            first = first or time.monotonic()
            text += "".join(c.delta.content or "" for c in chunk.choices)
        return first, time.monotonic(), text

    with ThreadPoolExecutor(WORKERS) as ex:
        results = list(ex.map(chat, answers))

    assert [text for _, _, text in results] == [f"Echo (1 messages): {words}"] * WORKERS
    assert max(first for first, _, _ in results) < min(end for _, end, _ in results)  # all four ran at once
    assert pool.environments == [environment]  # in the one environment
    for answer in answers:
        stored = [i for i in table_items(stack, str(answer["conversation_id"])) if i["sk"]["S"].startswith("MSG#")]
        assert [i["status"]["S"] for i in stored] == ["complete", "complete"]
    assert not any("threads exist when the runtime forks" in line for _, line in stack.logs.lines)


def test_one_stream_outlasting_the_timeout_is_cut_and_stored_while_the_others_complete(stack: LocalStack) -> None:
    """The function lets the provider go before its deadline: the client gets an error event, history stays whole.

    Lambda Managed Instances do not stop a timed-out invocation and standard Lambda stops it without storing
    anything; either way a provider still streaming at the deadline must not decide how the turn ends.
    """
    upstream_control(stack)
    _chat(signed_url(stack, subject=new_subject(), stateless=True), "warm up")
    _all_idle(stack)
    upstream_control(stack, delay_ms=40)  # 400 tokens: 16 s, twice the timeout
    long_answer = signed_url(stack, subject=new_subject())
    short_answers = [signed_url(stack, subject=new_subject()) for _ in range(WORKERS - 1)]
    words = " ".join(f"w{i}" for i in range(19))
    with ThreadPoolExecutor(WORKERS) as ex:
        long_turn = ex.submit(_chat, long_answer, " ".join(f"x{i}" for i in range(400)))
        time.sleep(1)
        short_turns = [ex.submit(_chat, answer, words) for answer in short_answers]
        status, body, took = long_turn.result()
        shorts = [f.result() for f in short_turns]

    events = sse_events(body)
    assert status == 200 and events[-1] == b"data: [DONE]\n\n"
    assert json.loads(events[-2][6:])["error"]["code"] == "upstream_timeout"
    assert took < STREAM_TIMEOUT - 1  # ended by the function, with time left to store the turn
    stored = [i for i in table_items(stack, str(long_answer["conversation_id"])) if i["sk"]["S"].startswith("MSG#")]
    assert [i["status"]["S"] for i in stored] == ["complete", "incomplete"]
    assert not any("Task timed out" in line for _, line in stack.logs.lines)
    assert [(s, sse_events(b)[-1]) for s, b, _ in shorts] == [(200, b"data: [DONE]\n\n")] * (WORKERS - 1)
    _all_idle(stack)  # every worker is free again


def test_one_stream_refused_by_the_provider_leaves_the_others_and_its_worker_serving(stack: LocalStack) -> None:
    upstream_control(stack)
    _chat(signed_url(stack, subject=new_subject(), stateless=True), "warm up")
    _all_idle(stack)
    for faults in ([{"status": 400, "message": "bad request"}], []):
        upstream_control(stack, delay_ms=20, faults=list(faults))  # (the upstream pops from the list it gets)
        answers = [signed_url(stack, subject=new_subject()) for _ in range(WORKERS)]
        with ThreadPoolExecutor(WORKERS) as ex:
            results = list(ex.map(lambda a: _chat(a, "one two three four five"), answers))
        assert sorted(status for status, _, _ in results) == [200] * (WORKERS - len(faults)) + [400] * len(faults)
        assert all(sse_events(b)[-1] == b"data: [DONE]\n\n" for s, b, _ in results if s == 200)
        _all_idle(stack)
    assert len(stack.pools["StreamFunction"].environments) == 1


def test_make_dev_passes_aws_lambda_max_concurrency_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "4")
    assert options_from_env(ROOT, log_stream=None).max_concurrency == 4
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "four")
    with pytest.raises(StackError, match="positive integer"):
        options_from_env(ROOT, log_stream=None)
    monkeypatch.delenv("AWS_LAMBDA_MAX_CONCURRENCY")
    assert options_from_env(ROOT, log_stream=None).max_concurrency is None
