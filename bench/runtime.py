"""Runtime overhead vs awslambdaric, and the time the local Function URL path adds to the first byte."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

from bench.harness import BENCH, cpu_seconds, environment_pids, invoke, variant
from bench.report import Row, Section
from bench.stats import median, ms, p95
from local.function_url import FunctionUrlServer
from local.pool import FunctionPool
from local.stack import LocalStack

EVENT = json.dumps({"version": "2.0", "rawPath": "/", "requestContext": {"requestId": "bench"}}).encode()


def _series(pool: FunctionPool, n: int) -> tuple[list[float], float]:
    invoke(pool, EVENT)  # cold start excluded
    pids = environment_pids(pool)
    cpu0 = cpu_seconds(pids)
    times = []
    for _ in range(n):
        start, _, end, _ = invoke(pool, EVENT)
        times.append(end - start)
    return times, (cpu_seconds(pids) - cpu0) / n


def run(stack: LocalStack, quick: bool) -> Section:
    """Trivial handler, same local Runtime API, our runtime vs awslambdaric; then URL vs direct TTFB."""
    n = 100 if quick else 1000
    handlers = BENCH / "handlers"
    ours = variant(stack, "StreamFunction", "TrivialOurs", code_dir=handlers, handler="trivial.buffered")
    ric = variant(
        stack,
        "StreamFunction",
        "TrivialRic",
        code_dir=handlers,
        handler="trivial.buffered",
        drop_env=["AWS_LAMBDA_EXEC_WRAPPER"],
    )
    try:
        # Interleave rounds so drift on a noisy machine hits both alike.
        ours_t, ric_t, ours_cpu, ric_cpu = [], [], [], []
        for _ in range(4):
            t, c = _series(ours, n // 4)
            ours_t += t
            ours_cpu.append(c)
            t, c = _series(ric, n // 4)
            ric_t += t
            ric_cpu.append(c)
    finally:
        ours.close()
        ric.close()
    ratio = median(ours_t) / median(ric_t)
    section = Section(
        "Runtime overhead",
        f"A trivial buffered handler invoked {n} times (in 4 interleaved rounds, after a warm-up) through the same local "
        "Runtime API, once under our runtime (exec wrapper) and once under the official `awslambdaric` 4.2.2. "
        "Wall time per invocation is measured from queueing the event to the runtime's `202`; CPU is the function "
        "process's user+system time per invocation (from `/proc`).",
    )
    section.rows += [
        Row(
            "runtime",
            "per-invocation time, p50 (p95)",
            f"{ms(median(ours_t))} ({ms(p95(ours_t))})",
            f"{ms(median(ric_t))} ({ms(p95(ric_t))}) awslambdaric",
            f"{ratio:.2f}x",
            "<= 1.0x",
            ratio <= 1.0,
        ),
        Row(
            "runtime",
            "function CPU per invocation",
            ms(median(ours_cpu)),
            f"{ms(median(ric_cpu))} awslambdaric",
            f"{median(ours_cpu) / max(median(ric_cpu), 1e-9):.2f}x",
        ),
    ]
    section.rows.append(_url_overhead(stack, quick))
    return section


def _url_overhead(stack: LocalStack, quick: bool) -> Row:
    handlers = BENCH / "handlers"
    pool = variant(stack, "StreamFunction", "TrivialStream", code_dir=handlers, handler="trivial.streamed")
    server = FunctionUrlServer(pool, {})
    server.start()
    parts = urlsplit(server.url)
    n = 50 if quick else 500
    direct, via_url = [], []
    try:
        invoke(pool, EVENT)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port)
        for _ in range(n):
            start, first, _, _ = invoke(pool, EVENT)
            direct.append(first - start)
            start = time.perf_counter()
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read(1)
            via_url.append(time.perf_counter() - start)
            response.read()
    finally:
        server.stop()
        pool.close()
    added = median(via_url) - median(direct)
    return Row(
        "local stack",
        "time to first byte added by the Function URL front, p50",
        ms(added),
        f"direct Runtime API call {ms(median(direct))}; via URL {ms(median(via_url))}",
        "",
        "<= 2 ms",
        added <= 0.002,
        note=f"{n} alternating requests; the URL path adds HTTP parsing, the payload-2.0 event and the prelude relay.",
    )
