"""urllib3 vs http.client for the upstream call: import time, CPU per request, CPU per streamed chunk.

And, per whole short request, the AWS client's own exchange (sigstream.adapters.http_exchange) beside both.
`python -m bench.http_clients` (PYTHONPATH as for `make bench`). The numbers are recorded in
docs/adr/0007-upstream-client.md and docs/adr/0010-aws-http-exchange.md. The server runs in another process,
so process CPU is the client's own.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from bench.harness import ROOT

BODY = json.dumps(
    {"model": "local-echo-1", "stream": True, "messages": [{"role": "user", "content": "hello " * 20}]}
).encode()
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench", "accept": "text/event-stream"}


def import_cost(module: str, runs: int) -> float:
    """Median extra import time of `module` in a fresh interpreter that already has the stdlib HTTP stack."""
    code = (
        "import time, http.client, ssl, json, socket\n"
        f"t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    )
    times = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    ]
    return statistics.median(times)


def stdlib_post(url: str) -> Callable[[], int]:
    """One keep-alive http.client connection; reads the body with read1 as the relay does."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)

    def post() -> int:
        conn.request("POST", parts.path + "/chat/completions", BODY, HEADERS)
        response = conn.getresponse()
        reads = 0
        while response.read1(65536):
            reads += 1
        return reads

    return post


def urllib3_post(url: str) -> Callable[[], int]:
    """A urllib3 pool (one connection, reused); streams the body as our client does."""
    import urllib3

    pool = urllib3.HTTPConnectionPool(
        urlsplit(url).hostname or "", urlsplit(url).port, maxsize=1, retries=False, timeout=30.0
    )
    path = urlsplit(url).path + "/chat/completions"

    def post() -> int:
        response = pool.urlopen("POST", path, body=BODY, headers=HEADERS, preload_content=False, decode_content=False)
        reads = 0
        while response.read1(65536):
            reads += 1
        response.release_conn()
        return reads

    return post


def exchange_post(url: str) -> Callable[[], int]:
    """The AWS client's exchange: one write, the whole answer read at once."""
    from sigstream.adapters.http_exchange import KeepAliveConnection

    parts = urlsplit(url)
    conn = KeepAliveConnection(parts.hostname or "", parts.port or 80, timeout=30)

    def post() -> int:
        conn.request("POST", parts.path + "/chat/completions", HEADERS, BODY)
        return 1

    return post


def cpu_per(post: Callable[[], int], repeat: int) -> tuple[float, float]:
    """(CPU seconds per request, CPU seconds per read) over `repeat` requests."""
    post()  # connect and warm up
    start = time.process_time()
    reads = sum(post() for _ in range(repeat))
    spent = time.process_time() - start
    return spent / repeat, spent / max(reads, 1)


def _server(reply: str, delay_ms: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys,time; from local.fake_provider import FakeProvider; s=FakeProvider('sk-bench'); "
        f"s.control.update({{'reply': {reply!r}, 'delay_ms': {delay_ms}}}); print(s.base_url, flush=True); "
        "time.sleep(3600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def main() -> None:
    """Print the measurements as a markdown table."""
    rows: list[tuple[str, ...]] = [
        (
            "import (on top of http.client, ssl, json)",
            "0 ms (already loaded)",
            f"{import_cost('urllib3', 15) * 1000:.1f} ms",
            f"{import_cost('sigstream.adapters.http_exchange', 15) * 1000:.1f} ms",
        )
    ]
    short, base = _server("ok")
    try:
        per_request: dict[str, list[float]] = {"stdlib": [], "urllib3": [], "exchange": []}
        for _ in range(5):  # interleaved rounds
            per_request["stdlib"].append(cpu_per(stdlib_post(base), 400)[0])
            per_request["urllib3"].append(cpu_per(urllib3_post(base), 400)[0])
            per_request["exchange"].append(cpu_per(exchange_post(base), 400)[0])
    finally:
        short.kill()
    # Paced (0.05 ms per event) so most events arrive in a read of their own, as from a real provider.
    long, base = _server(" ".join(["token"] * 20000), 0.05)
    try:
        per_read: dict[str, list[float]] = {"stdlib": [], "urllib3": []}
        for _ in range(3):
            per_read["stdlib"].append(cpu_per(stdlib_post(base), 2)[1])
            per_read["urllib3"].append(cpu_per(urllib3_post(base), 2)[1])
    finally:
        long.kill()
    rows.append(
        (
            "CPU per request (short answer, keep-alive)",
            f"{statistics.median(per_request['stdlib']) * 1e6:.0f} us",
            f"{statistics.median(per_request['urllib3']) * 1e6:.0f} us",
            f"{statistics.median(per_request['exchange']) * 1e6:.0f} us",
        )
    )
    rows.append(
        (
            "CPU per streamed event (20,000 events, one per read)",
            f"{statistics.median(per_read['stdlib']) * 1e6:.1f} us",
            f"{statistics.median(per_read['urllib3']) * 1e6:.1f} us",
            "(not a streaming client)",
        )
    )
    print("| measurement | http.client | urllib3 | AWS client's exchange |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
