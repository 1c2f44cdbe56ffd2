"""Load on the local stack (loopback only, bounded), resource growth of a warm process, and secret-free logs."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from signway_sdk import sign_url

from local.invocation import InvocationFailed, ResponseEnd
from local.stack import LocalStack
from local.url_event import HttpRequest, build_event
from sigstream.core.settings import parse_signing_keys, parse_sw1_apps
from sigstream.core.url_issuer import SignSpec, issue_url
from tests.helpers import http, new_subject, sign, signed_url, sse_text, table_items, upstream_control


def test_100_concurrent_streams_store_every_turn_once_without_cross_talk(app_stack: LocalStack) -> None:
    upstream_control(app_stack, delay_ms=10)
    pool = app_stack.pools["StreamFunction"]
    saved, pool.max_environments = pool.max_environments, 16  # reserved concurrency: the rest queue
    answers = [signed_url(app_stack, subject=new_subject()) for _ in range(100)]

    def one(index: int) -> tuple[int, str]:
        body = json.dumps(
            {"stream": True, "messages": [{"role": "user", "content": f"question {index} unique"}]}
        ).encode()
        status, _, data = http("POST", answers[index]["url"], body, {"content-type": "application/json"})
        return status, sse_text(data)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(100) as executor:
            results = list(executor.map(one, range(100)))
    finally:
        pool.max_environments = saved
    assert time.monotonic() - started < 240
    assert [r[0] for r in results] == [200] * 100
    for index, (_, text) in enumerate(results):
        assert text == f"Echo (1 messages): question {index} unique"
    for index, answer in enumerate(answers):
        items = sorted(
            (i for i in table_items(app_stack, answer["conversation_id"]) if i["sk"]["S"].startswith("MSG#")),
            key=lambda i: i["sk"]["S"],
        )
        assert [(i["role"]["S"], i["content"]["S"]) for i in items] == [
            ("user", f"question {index} unique"),
            ("assistant", f"Echo (1 messages): question {index} unique"),
        ]


def _proc(pid: int) -> tuple[int, int]:
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return fds, rss


def test_no_descriptor_or_memory_growth_over_1000_warm_invocations(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    pool = app_stack.pools["StreamFunction"]
    pool.recycle()
    saved, pool.max_environments = pool.max_environments, 1
    keys = parse_signing_keys(app_stack.secret_values()["signing-keys"])
    stream_url = app_stack.endpoints()["stream_url"]
    body = json.dumps({"stream": True, "messages": [{"role": "user", "content": "x"}]}).encode()

    def invoke_once() -> None:
        spec = SignSpec(subject=new_subject(), stateless=True)
        answer = issue_url(
            spec, keys, stream_url, now=int(time.time()), max_lifetime=3600, new_id=lambda p: p + "x" * 20
        )
        query = urlsplit(answer["url"]).query
        event = build_event(
            HttpRequest(
                "POST", "/v1/chat/completions", query, [("content-type", "application/json")], body, "127.0.0.1"
            ),
            url_id="u",
            region="us-east-1",
            request_id="r",
            now=time.time(),
            iam=None,
        )
        inv = pool.invoke(json.dumps(event).encode())
        while not isinstance(item := inv.events.get(timeout=30), (ResponseEnd, InvocationFailed)):
            pass
        assert isinstance(item, ResponseEnd) and item.error_type is None

    try:
        for _ in range(100):
            invoke_once()  # warm-up: caches, connections and lazy imports settle
        (env,) = pool.environments
        before = _proc(env.process.pid)
        for _ in range(1000):
            invoke_once()
        after = _proc(env.process.pid)
        assert pool.environments == [env]  # the same warm process served all of them
    finally:
        pool.max_environments = saved
    assert after[0] - before[0] <= 2, f"file descriptors grew from {before[0]} to {after[0]}"
    assert after[1] - before[1] <= 16 * 1024, f"RSS grew from {before[1]} kB to {after[1]} kB"


def test_logs_never_contain_secrets_signatures_or_signed_urls(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    first = len(app_stack.logs.lines)
    secrets = app_stack.secret_values()
    answer = signed_url(app_stack, subject=new_subject())
    http(
        "POST",
        answer["url"],
        json.dumps({"stream": True, "messages": [{"role": "user", "content": "log test"}]}).encode(),
        {"content-type": "application/json"},
    )
    tampered = answer["url"][:-3] + "AAA"
    http("POST", tampered, b"{}", {"content-type": "application/json"})
    sign(app_stack, {"subject": "bad subject"})
    endpoints = app_stack.endpoints()
    sw1 = sign_url(
        endpoints["sw1_app"]["id"],
        endpoints["sw1_app"]["secret"],
        endpoints["stream_url"],
        endpoints["upstream_base_url"] + "/chat/completions",
        60,
        "POST",
    )
    http(
        "POST",
        sw1,
        json.dumps({"model": "local-echo-1", "messages": [{"role": "user", "content": "sw1"}]}).encode(),
        {"content-type": "application/json"},
    )
    lines = [line for _, line in app_stack.logs.lines[first:]]
    assert len(lines) > 5, "expected the functions to have logged this traffic"
    forbidden = {
        "provider key": secrets["provider-key"],
        "sw1 app secret": next(iter(parse_sw1_apps(secrets["sw1-apps"]).values())).secret,
        "url signature": dict(parse_qsl(urlsplit(answer["url"]).query))["sig"],
        "sw1 signature": dict(parse_qsl(urlsplit(sw1).query))["X-Sw-Signature"],
        "signed url": answer["url"],
    }
    forbidden |= {
        f"signing key {kid}": key.decode() for kid, key in parse_signing_keys(secrets["signing-keys"]).keys.items()
    }
    for name, value in forbidden.items():
        leaks = [line for line in lines if value in line]
        assert not leaks, f"{name} appears in the logs: {leaks[0][:200]}"
    assert not any("log test" in line for line in lines), "message text is logged only with SIGSTREAM_LOG_CONTENT=true"
