"""AWS_LAMBDA_MAX_CONCURRENCY=4: four streams at once in one environment (Lambda Managed Instances)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.contenders import floor_pool
from bench.harness import variant
from bench.report import Row, Section
from bench.stats import median, ms
from local.function_url import FunctionUrlServer
from local.stack import LocalStack

WORKERS = 4
BODY = json.dumps(
    {"model": "local-echo-1", "stream": True, "messages": [{"role": "user", "content": "one two three four five"}]}
).encode()


def _measure(pool: Any, url: Any, http_first_byte: Any, rounds: int) -> tuple[list[float], list[float], int, int]:
    """(first bytes one at a time, first bytes four at once, streams completed, environments used)."""
    http_first_byte(url(), BODY)  # start the environment: init once, then fork
    deadline = time.monotonic() + 30
    while pool.idle_slots < WORKERS and time.monotonic() < deadline:
        time.sleep(0.01)
    single: list[float] = []
    together: list[float] = []
    complete = 0
    for _ in range(rounds):
        for _ in range(WORKERS):
            ttfb, _, data = http_first_byte(url(), BODY)
            assert data.endswith(b"data: [DONE]\n\n"), data[-200:]
            single.append(ttfb)
        urls = [url() for _ in range(WORKERS)]
        barrier = threading.Barrier(WORKERS)

        def one(target: str, barrier: threading.Barrier = barrier) -> tuple[float, bool]:
            barrier.wait()
            ttfb, _, data = http_first_byte(target, BODY)
            return ttfb, data.endswith(b"data: [DONE]\n\n")

        with ThreadPoolExecutor(WORKERS) as ex:
            results = list(ex.map(one, urls))
        together += [t for t, _ in results]
        complete += sum(ok for _, ok in results)
        time.sleep(0.05)  # let every worker get back to /next
    return single, together, complete, len(pool.environments)


def max_concurrency(stack: LocalStack, signer: Any, http_first_byte: Any, quick: bool) -> Section:
    """First byte of one stream alone vs four at once, in one warm environment with four workers; floor alike."""
    assert stack.upstream is not None
    rounds = 2 if quick else 6
    env = {"AWS_LAMBDA_MAX_CONCURRENCY": str(WORKERS)}
    ours_pool = variant(stack, "StreamFunction", "StreamLmi", env=env)
    floor = floor_pool(stack, "FloorLmi", **env)
    servers = [FunctionUrlServer(ours_pool, {}), FunctionUrlServer(floor, {})]
    for server in servers:
        server.start()
    base = signer.stream_url  # the signature covers method, path and query: any host serves it

    def ours_url() -> str:
        return str(signer.url()["url"]).replace(base, servers[0].url)

    try:
        stack.upstream.control.update({"reset": True, "delay_ms": 20})
        single, together, complete, environments = _measure(ours_pool, ours_url, http_first_byte, rounds)
        f_single, f_together, _, _ = _measure(floor, lambda: servers[1].url, http_first_byte, rounds)
    finally:
        stack.upstream.control.update({"reset": True})
        for server in servers:
            server.stop()
        ours_pool.close()
        floor.close()
    ratio = median(together) / median(single)
    floor_ratio = median(f_together) / median(f_single)
    total = rounds * WORKERS
    section = Section(
        "AWS_LAMBDA_MAX_CONCURRENCY=4",
        f"The Stream function with `AWS_LAMBDA_MAX_CONCURRENCY={WORKERS}` (the runtime forks {WORKERS} workers after "
        f"init) behind a local Function URL, warm, upstream pacing 20 ms per token; each stream its own "
        f"conversation. {rounds} rounds of {WORKERS} streams one after another, then {WORKERS} at once (a barrier); "
        "time to first byte at the HTTP client. The floor handler is measured the same way with the same setting.",
    )
    section.rows += [
        Row(
            "max concurrency",
            f"{WORKERS} concurrent streams in one environment: completed",
            f"{complete}/{total} in {environments} environment(s)",
            target=f"{total}/{total}, 1 environment",
            met=complete == total and environments == 1,
            key="lmi_complete",
            data={"complete": complete, "total": total, "environments": environments},
        ),
        Row(
            "max concurrency",
            "first byte, 4 at once vs one at a time, p50",
            f"{ms(median(together))} vs {ms(median(single))}",
            f"floor: {ms(median(f_together))} vs {ms(median(f_single))} ({floor_ratio:.2f}x)",
            f"{ratio:.2f}x",
            "<= 1.5x",
            ratio <= 1.5,
            key="lmi_ttfb",
            data={
                "together": median(together),
                "single": median(single),
                "worst": max(together),
                "floor_together": median(f_together),
                "floor_single": median(f_single),
            },
        ),
    ]
    return section
