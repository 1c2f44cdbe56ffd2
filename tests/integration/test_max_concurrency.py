"""AWS_LAMBDA_MAX_CONCURRENCY=4 on the local stack: one environment, four forked workers, the real Stream function."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from local.stack import LocalStack, StackError, StackOptions, options_from_env
from tests.conftest import ROOT
from tests.helpers import new_subject, signed_url, table_items, upstream_control

WORKERS = 4


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """template.yaml with every function serving four invocations per environment."""
    s = LocalStack(
        StackOptions(root=ROOT, template=ROOT / "template.yaml", max_concurrency=WORKERS, log_stream=io.StringIO())
    )
    s.start()
    yield s
    s.stop()


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


def test_make_dev_passes_aws_lambda_max_concurrency_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "4")
    assert options_from_env(ROOT, log_stream=None).max_concurrency == 4
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "four")
    with pytest.raises(StackError, match="positive integer"):
        options_from_env(ROOT, log_stream=None)
    monkeypatch.delenv("AWS_LAMBDA_MAX_CONCURRENCY")
    assert options_from_env(ROOT, log_stream=None).max_concurrency is None
