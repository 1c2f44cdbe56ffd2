"""AWS_LAMBDA_MAX_CONCURRENCY=4: four streams at once in one environment (Lambda Managed Instances)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.harness import variant
from bench.report import Row, Section
from bench.stats import median, ms
from local.function_url import FunctionUrlServer
from local.stack import LocalStack

WORKERS = 4
BODY = json.dumps(
    {"model": "local-echo-1", "stream": True, "messages": [{"role": "user", "content": "one two three four five"}]}
).encode()


def max_concurrency(stack: LocalStack, signer: Any, http_first_byte: Any, quick: bool) -> Section:
    """First byte of one stream alone vs four at once, in one warm environment with four workers."""
    assert stack.upstream is not None
    rounds = 2 if quick else 6
    pool = variant(stack, "StreamFunction", "StreamLmi", env={"AWS_LAMBDA_MAX_CONCURRENCY": str(WORKERS)})
    server = FunctionUrlServer(pool, {})
    server.start()
    # The Stream function's URL signer signs for its own URL; this one accepts the same signatures.
    base = signer.stream_url

    def url() -> str:
        return str(signer.url()["url"]).replace(base, server.url)

    single: list[float] = []
    together: list[float] = []
    complete = 0
    try:
        stack.upstream.control.update({"reset": True, "delay_ms": 20})
        http_first_byte(url(), BODY)  # start the environment: init once, then fork
        deadline = time.monotonic() + 30
        while pool.idle_slots < WORKERS and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(rounds):
            for _ in range(WORKERS):
                ttfb, _, data = http_first_byte(url(), BODY)
                single.append(ttfb)
                complete_single = data.endswith(b"data: [DONE]\n\n")
                assert complete_single, data[-200:]
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
        environments = len(pool.environments)
    finally:
        stack.upstream.control.update({"reset": True})
        server.stop()
        pool.close()
    ratio = median(together) / median(single)
    total = rounds * WORKERS
    section = Section(
        "AWS_LAMBDA_MAX_CONCURRENCY=4",
        f"The Stream function with `AWS_LAMBDA_MAX_CONCURRENCY={WORKERS}` (the runtime forks {WORKERS} workers after "
        f"init) behind a local Function URL, warm, upstream pacing 20 ms per token. {rounds} rounds of {WORKERS} "
        f"streams one after another, then {WORKERS} at once (a barrier); time to first byte at the HTTP client.",
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
            ms(median(together)),
            f"{ms(median(single))} one at a time",
            f"{ratio:.2f}x",
            "<= 1.5x",
            ratio <= 1.5,
            key="lmi_ttfb",
            data={"together": median(together), "single": median(single), "worst": max(together)},
        ),
    ]
    return section
