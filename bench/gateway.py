"""Stream function benchmarks through the local stack: memory, 50 concurrent streams, AWS requests and cost."""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from bench.harness import environment_pids, invoke, peak_rss_mb
from bench.report import Row, Section
from bench.stats import median, ms, p95
from local.stack import LocalStack
from local.url_event import HttpRequest, build_event
from sigstream.core.settings import parse_signing_keys
from sigstream.core.url_issuer import SignSpec, issue_url

PRICES = {  # us-east-1 list prices; see the cost section for their dates
    "lambda_gb_s_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1_000_000,
    "ddb_wru": 0.625 / 1_000_000,
    "ddb_rru": 0.125 / 1_000_000,
    "secrets_call": 0.05 / 10_000,
}


class Signer:
    """Signs Stream URLs in-process with the stack's own key (what the Sign function would return)."""

    def __init__(self, stack: LocalStack) -> None:
        self.keys = parse_signing_keys(stack.secret_values()["signing-keys"])
        self.stream_url = stack.endpoints()["stream_url"]

    def url(
        self, stateless: bool = False, conversation_id: str | None = None, path: str = "/v1/chat/completions"
    ) -> dict[str, Any]:
        spec = SignSpec(
            subject="bench-" + secrets.token_hex(6), path=path, stateless=stateless, conversation_id=conversation_id
        )
        return issue_url(
            spec,
            self.keys,
            self.stream_url,
            now=int(time.time()),
            max_lifetime=3600,
            new_id=lambda p: p + secrets.token_urlsafe(18),
        )


def chat_event(answer: dict[str, Any], stream: bool = True, text: str = "hello") -> bytes:
    """A Function URL event for POST /v1/chat/completions with a signed query."""
    body = json.dumps(
        {"model": "local-echo-1", "stream": stream, "messages": [{"role": "user", "content": text}]}
    ).encode()
    path, _, query = answer["url"].split("/", 3)[3].partition("?")
    request = HttpRequest("POST", "/" + path, query, [("content-type", "application/json")], body, "127.0.0.1")
    event = build_event(
        request, url_id="bench", region="us-east-1", request_id=secrets.token_hex(8), now=time.time(), iam=None
    )
    return json.dumps(event).encode()


def ui_chat_event(answer: dict[str, Any], text: str = "hello") -> bytes:
    """A Function URL event for POST /v1/chat (the AI SDK's DefaultChatTransport body) with a signed query."""
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    body = json.dumps({"id": "chat-bench", "messages": [message], "trigger": "submit-message"}).encode()
    path, _, query = answer["url"].split("/", 3)[3].partition("?")
    request = HttpRequest("POST", "/" + path, query, [("content-type", "application/json")], body, "127.0.0.1")
    event = build_event(
        request, url_id="bench", region="us-east-1", request_id=secrets.token_hex(8), now=time.time(), iam=None
    )
    return json.dumps(event).encode()


def http_first_byte(url: str, body: bytes, at_first: Callable[[], object] | None = None) -> tuple[float, float, bytes]:
    """(time to first body byte, total time, body) of a POST; `at_first` is called once the first byte is in."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=120)
    start = time.perf_counter()
    conn.request("POST", f"{parts.path}?{parts.query}", body, {"content-type": "application/json"})
    response = conn.getresponse()
    first = response.read1(65536)
    ttfb = time.perf_counter() - start
    if at_first is not None:
        at_first()
    rest = response.read()
    return ttfb, time.perf_counter() - start, first + rest


def memory(stack: LocalStack, signer: Signer, quick: bool) -> Section:
    """Peak RSS of a fresh Stream function process after one 4,000-token streamed answer."""
    assert stack.upstream is not None
    pool = stack.pools["StreamFunction"]
    stack.upstream.control.update({"reset": True, "reply": " ".join(["word"] * 4000)})
    pool.recycle()
    invoke(pool, chat_event(signer.url(stateless=True)))
    peak = max(peak_rss_mb(pid) for pid in environment_pids(pool))
    stack.upstream.control.update({"reset": True})
    headroom = 1 - peak / 256
    section = Section(
        "Memory",
        "VmHWM (peak resident set) of a fresh Stream function process after one 4,000-token streamed answer.",
    )
    section.rows.append(
        Row(
            "memory",
            "peak RSS, 4,000-token answer",
            f"{peak:.0f} MB",
            "256 MB Lambda",
            f"{headroom:.0%} headroom",
            ">= 40% headroom",
            headroom >= 0.4,
        )
    )
    return section


def concurrency(stack: LocalStack, signer: Signer, quick: bool) -> tuple[Section, list[float]]:
    """50 concurrent streams: all complete, TTFB, and every history item stored."""
    assert stack.upstream is not None and stack.moto is not None
    n = 10 if quick else 50
    stack.upstream.control.update({"reset": True, "delay_ms": 20})
    body = json.dumps(
        {"model": "local-echo-1", "stream": True, "messages": [{"role": "user", "content": "one two three four five"}]}
    ).encode()
    waves: dict[str, list[tuple[float, bool, str]]] = {}
    for wave in ("cold", "warm"):
        if wave == "cold":
            stack.pools["StreamFunction"].recycle()
        answers = [signer.url() for _ in range(n)]
        barrier = threading.Barrier(n)

        def one(answer: dict[str, Any], barrier: threading.Barrier = barrier) -> tuple[float, bool, str]:
            barrier.wait()
            ttfb, _, data = http_first_byte(answer["url"], body)
            return ttfb, data.endswith(b"data: [DONE]\n\n"), answer["conversation_id"]

        with ThreadPoolExecutor(n) as ex:
            waves[wave] = list(ex.map(one, answers))
    stack.upstream.control.update({"reset": True})
    ddb = stack.moto.client("dynamodb")
    table = ddb.list_tables()["TableNames"][0]
    lost = duplicated = 0
    for results in waves.values():
        for _, _, cid in results:
            items = ddb.query(
                TableName=table,
                KeyConditionExpression="pk = :p",
                ConsistentRead=True,
                ExpressionAttributeValues={":p": {"S": f"CONV#{cid}"}},
            )["Items"]
            stored = sum(1 for i in items if i["sk"]["S"].startswith("MSG#"))
            lost += max(2 - stored, 0)
            duplicated += max(stored - 2, 0)
    section = Section(
        "Concurrency",
        f"{n} streams started at once (a barrier) through the local stack, each its own subject and conversation, the "
        "upstream pacing 20 ms per token; first with no warm environment (the pool starts one per concurrent request, "
        "as Lambda does), then again with all of them warm. After both waves every conversation is read back from moto.",
    )
    for wave, results in waves.items():
        ttfbs = [r[0] for r in results]
        section.rows.append(
            Row(
                "concurrency",
                f"{n} streams, {wave}: completed; TTFB p50 / p95",
                f"{sum(r[1] for r in results)}/{n}; {ms(median(ttfbs))} / {ms(p95(ttfbs))}",
                target=f"{n}/{n} complete",
                met=all(r[1] for r in results),
            )
        )
    section.rows.append(
        Row(
            "concurrency",
            "history items lost / duplicated",
            f"{lost} / {duplicated}",
            target="0 / 0",
            met=lost == 0 and duplicated == 0,
        )
    )
    return section, [r[0] for r in waves["warm"]]


def cost(stack: LocalStack, signer: Signer, quick: bool) -> Section:
    """AWS requests per turn (counted at a proxy in front of moto) and cost per 1,000 turns."""
    assert stack.aws_proxy is not None and stack.upstream is not None
    pool = stack.pools["StreamFunction"]
    stack.upstream.control.update({"reset": True, "delay_ms": 20, "reply": " ".join(["word"] * 200)})
    counts: dict[str, dict[str, int]] = {}
    durations = []
    for kind in ("cold", "warm", "warm"):
        if kind == "cold":
            pool.recycle()
        answer = signer.url()
        stack.aws_proxy.reset()
        start, _, end, _ = invoke(pool, chat_event(answer))
        counts[kind] = dict(stack.aws_proxy.counts)
        if kind == "warm":
            durations.append(end - start)
    stack.upstream.control.update({"reset": True})
    warm = counts["warm"]
    ddb_ops = {k: v for k, v in warm.items() if k not in ("GetSecretValue",)}
    ddb_requests = sum(ddb_ops.values())
    duration = median(durations)
    # Of a warm conversation turn's requests, these are fixed; the rest are the watcher's (checkpoints, stop checks).
    fixed = {"Query": 1, "TransactWriteItems": 2, "UpdateItem": 2}  # history; begin + final; reservation + settlement
    watcher = ddb_requests - sum(min(warm.get(k, 0), n) for k, n in fixed.items())
    wru = warm.get("UpdateItem", 0) + 6 * warm.get("TransactWriteItems", 0) + warm.get("PutItem", 0)
    rru = warm.get("Query", 0) + warm.get("GetItem", 0)
    per_turn = {
        "Lambda duration (256 MB, arm64)": duration * 0.25 * PRICES["lambda_gb_s_arm64"],
        "Lambda requests": PRICES["lambda_request"],
        "DynamoDB writes": wru * PRICES["ddb_wru"],
        "DynamoDB reads": rru * PRICES["ddb_rru"],
        "Secrets Manager (cached 5 min; ~1 fetch per environment per 5 min)": 0.0,
    }
    table = ["| cost item | per 1,000 turns (USD) |", "|---|---|"] + [
        f"| {k} | {v * 1000:.4f} |" for k, v in per_turn.items()
    ]
    table.append(f"| **total** | **{sum(per_turn.values()) * 1000:.4f}** |")
    section = Section(
        "AWS requests and cost per chat turn",
        "One streamed turn in a conversation (200-token answer, upstream pacing 20 ms per token) through the Stream "
        "function, with a counting proxy between the function and moto server. Cold = fresh environment (secrets "
        f"fetched); warm = cached secrets. Requests counted: cold {counts['cold']}, warm {warm}. A conversation turn "
        "makes 1 history Query and 1 budget reservation before the first byte, 1 TransactWriteItems concurrently "
        "with the provider call (its messages and the reply `in_progress`), then about once a second a checkpoint "
        "UpdateItem (new text) or a stop-flag GetItem (none), and at the end 1 TransactWriteItems (the final reply) "
        f"and 1 settlement UpdateItem (ADR 0009): here {watcher} watcher requests in {duration:.2f} s. "
        f"Cost model: billed duration = measured turn duration ({duration:.2f} s, dominated by the upstream's pace), "
        "256 MB; DynamoDB units: UpdateItem/PutItem 1 WRU (a checkpoint of under 1 KB of text; a longer text costs "
        "1 WRU per KB, and checkpoints are spaced to at most ~8 KB/s), TransactWriteItems of up to 3 small items "
        f"6 WRU, a consistent Query or GetItem of <4 KB 1 RRU ({wru} WRU + {rru} RRU per turn). Prices: us-east-1 "
        "list prices as published — Lambda arm64 $0.0000133334 per GB-s and $0.20 per million requests (since "
        "2021-09), DynamoDB on-demand $0.625 per million WRU and $0.125 per million RRU (since the 2024-11-01 "
        "reduction), Secrets Manager $0.05 per 10,000 calls — not re-checked live from this machine (no internet "
        "access).",
        extra="\n".join(table),
    )
    bound = 5 + int(duration) + 1  # the fixed five, and at most one watcher request per started second
    section.rows += [
        Row(
            "cost",
            "DynamoDB requests per warm turn",
            str(ddb_requests),
            target=f"<= 5 + 1 per streamed second ({bound})",
            met=ddb_requests <= bound,
        ),
        Row(
            "cost",
            "checkpoints and stop checks per streamed second",
            f"{watcher / duration:.2f}" if duration else "0",
            target="<= 1",
            met=watcher <= int(duration) + 1,
        ),
        Row(
            "cost",
            "Secrets Manager requests per turn (cold / warm)",
            f"{counts['cold'].get('GetSecretValue', 0)} / {warm.get('GetSecretValue', 0)}",
        ),
        Row("cost", "cost per 1,000 turns", f"${sum(per_turn.values()) * 1000:.4f}"),
    ]
    return section


HOLD_SECONDS = 0.3


def first_write(stack: LocalStack, signer: Signer, quick: bool) -> Section:
    """A conversation turn's first byte with DynamoDB's transactions held 300 ms, against the same turn without."""
    assert stack.aws_proxy is not None and stack.upstream is not None
    pool = stack.pools["StreamFunction"]
    stack.upstream.control.update({"reset": True})
    stack.aws_proxy.reset()
    invoke(pool, chat_event(signer.url()))  # warm
    plain: list[float] = []
    held: list[float] = []
    for index in range(6 if quick else 30):
        slow = index % 2 == 1  # interleaved, so the machine's noise falls on both alike
        stack.aws_proxy.reset()
        if slow:
            stack.aws_proxy.delays["TransactWriteItems"] = HOLD_SECONDS
        start, first, _, _ = invoke(pool, chat_event(signer.url()))
        (held if slow else plain).append(first - start)
    stack.aws_proxy.reset()
    ratio = median(held) / median(plain)
    gap = median(held) - median(plain)
    section = Section(
        "A turn's first write is off the first byte's path",
        "Warm conversation turns (a new conversation each, echo upstream) through the Runtime API, alternating: "
        f"DynamoDB as is, and every TransactWriteItems held {HOLD_SECONDS * 1000:.0f} ms by the counting proxy. The "
        "turn's messages and its `in_progress` reply are one such transaction, submitted just before the provider "
        "call; were the first byte waiting for it, the held turns' first byte would come that much later. Today's "
        "path before issue 13 wrote nothing before the first byte, so an unchanged first byte under a held write is "
        f"the same-run comparison with it. Medians of {len(plain)} turns each: {ms(median(plain))} as is, "
        f"{ms(median(held))} held ({gap * 1000:+.1f} ms, {ratio:.2f}x).",
    )
    section.rows.append(
        Row(
            "first byte",
            f"conversation turn TTFB, first write held {HOLD_SECONDS * 1000:.0f} ms",
            ms(median(held)),
            baseline=ms(median(plain)),
            ratio=f"{ratio:.2f}x",
            target=f"gap < {HOLD_SECONDS * 1000 / 3:.0f} ms",
            met=gap < HOLD_SECONDS / 3,
            data={"plain": median(plain), "held": median(held)},
        )
    )
    return section
