"""The Stream function against its two same-run baselines: the tutorial reference and the floor.

- reference: `bench/handlers/reference_handler.py`, written the way tutorials do it (Powertools, boto3 and the
  openai SDK created at import, calls in sequence, buffered answer) on the official `awslambdaric`;
- floor: `bench/handlers/floor_handler.py`, the same AWS calls and upstream request with nothing else, stdlib
  only, streaming through the same runtime layer as ours.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.harness import BENCH, PROBE_LAYER, invoke, keepalive_aws, probe_reports, variant
from bench.report import Row, Section
from bench.stats import median, ms, p95
from local.function_url import FunctionUrlServer
from local.pool import FunctionPool, lambda_environment
from local.stack import LocalStack

HANDLERS = BENCH / "handlers"
COLD_BODY = json.dumps(
    {"model": "local-echo-1", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
).encode()


def floor_pool(stack: LocalStack, name: str, handler: str = "floor_handler.handler", **env: str) -> FunctionPool:
    """The floor, on the Stream function's layers and runtime."""
    layers = stack.pools["StreamFunction"].spec.layer_dirs
    if handler.startswith("cpu_probe."):
        layers = (*layers, PROBE_LAYER)
    return variant(stack, "StreamFunction", name, code_dir=HANDLERS, handler=handler, layer_dirs=layers, env=env)


def reference_pool(
    stack: LocalStack, name: str, handler: str = "reference_handler.handler", **env: str
) -> FunctionPool:
    """The tutorial reference, on awslambdaric (no exec wrapper)."""
    layers = stack.pools["StreamFunction"].spec.layer_dirs
    if handler.startswith("cpu_probe."):
        layers = (*layers, PROBE_LAYER)
    return variant(
        stack,
        "StreamFunction",
        name,
        code_dir=HANDLERS,
        handler=handler,
        layer_dirs=layers,
        env=env,
        drop_env=["AWS_LAMBDA_EXEC_WRAPPER"],
    )


def stream_probe_pool(stack: LocalStack, name: str, **env: str) -> FunctionPool:
    """The Stream function itself, under the CPU probe."""
    spec = stack.pools["StreamFunction"].spec
    return variant(
        stack, "StreamFunction", name, handler="cpu_probe.stream", layer_dirs=(*spec.layer_dirs, PROBE_LAYER), env=env
    )


def cold_start(stack: LocalStack, signer: Any, http_first_byte: Any, quick: bool) -> tuple[Section, list[float]]:
    """Fresh process to first body byte through a Function URL, three ways, alternating."""
    reps = 3 if quick else 12
    ours_pool = stack.pools["StreamFunction"]
    floor = floor_pool(stack, "ColdFloor")
    reference = reference_pool(stack, "ColdReference")
    servers = [FunctionUrlServer(floor, {}), FunctionUrlServer(reference, {})]
    for server in servers:
        server.start()
    floor_url, reference_url = (s.url for s in servers)
    times: dict[str, list[float]] = {"ours": [], "floor": [], "reference": []}
    try:
        for _ in range(reps):
            ours_pool.recycle()
            ttfb, _, data = http_first_byte(signer.url()["url"], COLD_BODY)
            assert data.endswith(b"data: [DONE]\n\n"), data[-200:]
            times["ours"].append(ttfb)
            floor.recycle()
            ttfb, _, data = http_first_byte(floor_url, COLD_BODY)
            assert data.endswith(b"data: [DONE]\n\n"), data[-200:]
            times["floor"].append(ttfb)
            reference.recycle()
            ttfb, _, data = http_first_byte(reference_url, COLD_BODY)
            assert b"Echo" in data, data[:200]
            times["reference"].append(ttfb)
    finally:
        for server in servers:
            server.stop()
        floor.close()
        reference.close()
    ours, floor_t, ref_t = (median(times[k]) for k in ("ours", "floor", "reference"))
    section = Section(
        "Cold start",
        f"{reps} alternating cold starts of each of the three (every environment killed first), through the real "
        "runtime, the local Function URL and moto server, with the embedded upstream answering at once. Measured at "
        "the HTTP client from sending the request (which starts the process) to the first body byte.",
        extra=import_profile(stack),
    )
    detail = f"ours {ms(ours)} (p95 {ms(p95(times['ours']))})"
    section.rows += [
        Row(
            "cold start",
            "first byte vs the tutorial reference, p50",
            detail,
            f"{ms(ref_t)} reference (p95 {ms(p95(times['reference']))})",
            f"{ours / ref_t:.2f}x",
            "<= 0.3x",
            ours / ref_t <= 0.3,
            key="cold_vs_reference",
            data={"ours": ours, "baseline": ref_t},
        ),
        Row(
            "cold start",
            "first byte vs the floor, p50",
            detail,
            f"{ms(floor_t)} floor (p95 {ms(p95(times['floor']))})",
            f"{ours / floor_t:.2f}x",
            "<= 1.5x",
            ours / floor_t <= 1.5,
            key="cold_vs_floor",
            data={"ours": ours, "baseline": floor_t},
        ),
    ]
    return section, times["ours"]


OURS = ("stream_handler", "stream_app", "sigstream", "sigstream_runtime", "floor_handler")


def _import_tree(code_dir: Any, env: dict[str, str], module: str) -> list[tuple[str, int, str]]:
    """(module, cumulative microseconds, the module that imported it) from `python -X importtime`."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        cwd=code_dir,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    entries: list[tuple[str, int, int]] = []
    for line in out.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            _, micros, raw = line[12:].split("|")
            if micros.strip().isdigit():
                depth = (len(raw) - len(raw.lstrip()) - 1) // 2
                entries.append((raw.strip(), int(micros), depth))
    # importtime prints a module after everything it imported, indented one level less.
    parents: dict[int, str] = {}
    tree: list[tuple[str, int, str]] = []
    for name, cumulative, depth in reversed(entries):
        parents[depth] = name
        tree.append((name, cumulative, parents.get(depth - 1, "")))
    return tree


IMPORT_TOTALS: dict[str, float] = {}  # seconds, for the findings


def import_profile(stack: LocalStack) -> str:
    """What importing our handler module costs, and what it imports that is not ours; the floor's for scale."""
    pool = stack.pools["StreamFunction"]
    env = lambda_environment(pool.spec, "127.0.0.1:9", pool.aws_env, "us-east-1")
    ours = _import_tree(pool.spec.code_dir, env, "stream_handler")
    floor = _import_tree(HANDLERS, {**env, "PYTHONPATH": f"{env['PYTHONPATH']}:{HANDLERS}"}, "floor_handler")
    total = next(c for n, c, _ in ours if n == "stream_handler")
    floor_total = next(c for n, c, _ in floor if n == "floor_handler")
    # Modules our code imports directly that are not ours and that the floor does without.
    floor_modules = {n for n, _, _ in floor}
    external = sorted(
        (
            (n, c)
            for n, c, parent in ours
            if parent.split(".")[0] in OURS and n.split(".")[0] not in OURS and n not in floor_modules
        ),
        key=lambda nc: -nc[1],
    )
    IMPORT_TOTALS.clear()
    IMPORT_TOTALS.update({"stream_handler": total / 1e6, "floor_handler": floor_total / 1e6})
    IMPORT_TOTALS.update({f"external:{n}": c / 1e6 for n, c in external})
    lines = [
        "### Import-time profile (`python -X importtime`, one run, in the function's environment)",
        "",
        f"`stream_handler` imports in {total / 1000:.1f} ms, the floor's handler module in {floor_total / 1000:.1f} ms. "
        "The largest modules our code imports that are not ours and that the floor does not import (cumulative, "
        "each where it is first imported):",
        "",
        "| module | cumulative |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {cumulative / 1000:.1f} ms |" for name, cumulative in external[:10]]
    return "\n".join(lines)


def warm(stack: LocalStack, signer: Any, chat_event: Any, quick: bool) -> Section:
    """Warm invocations through the Runtime API: wall time and process CPU (from inside) before the first byte."""
    reps = 20 if quick else 200
    proxy = keepalive_aws(stack)
    env = {"AWS_ENDPOINT_URL": proxy.address}
    pools = {
        "ours": stream_probe_pool(stack, "WarmStream", **env),
        "floor": floor_pool(stack, "WarmFloor", "cpu_probe.floor", **env),
        "reference": reference_pool(stack, "WarmReference", "cpu_probe.reference", **env),
    }
    wall: dict[str, list[float]] = {k: [] for k in pools}
    since = len(stack.logs.lines)
    try:
        for i in range(reps + 5):
            for name, pool in pools.items():
                event = chat_event(signer.url(conversation_id=None))
                start, first, _, _ = invoke(pool, event)
                if i >= 5:  # the first invocations are the cold start and connection set-up
                    wall[name].append(first - start)
    finally:
        for pool in pools.values():
            pool.close()
        proxy.stop()
    cpu = {
        name: [r["cpu_first"] for r in probe_reports(stack, pool.spec.logical_id, since, reps + 5)[5:]]
        for name, pool in pools.items()
    }
    p50 = {name: median(values) for name, values in cpu.items()}
    walls = {name: median(values) for name, values in wall.items()}
    section = Section(
        "Warm invocations",
        f"{reps} warm invocations of each (interleaved, after 5 warm-ups) through the local Runtime API, each function "
        "in its own process with its AWS calls going to moto through a keep-alive front (as Lambda keeps its "
        "connections to AWS open). CPU is `time.process_time()` of the function process (all its threads) from "
        "the handler's start to the moment the first body chunk exists, measured inside the process by "
        "`bench/probe` and logged; wall time is from queueing the event to the first body byte at the Runtime API. "
        "The reference is buffered, so its first byte is its whole answer (a short one here).",
    )
    section.rows += [
        Row(
            "warm",
            "handler CPU before the first byte, p50",
            f"{ms(p50['ours'])} ours",
            f"{ms(p50['floor'])} floor; {ms(p50['reference'])} reference",
            f"{p50['ours'] / p50['floor']:.2f}x floor; {p50['ours'] / p50['reference']:.2f}x reference",
            "<= 1 ms",
            p50["ours"] <= 0.001,
            key="warm_cpu",
            data={"ours": p50["ours"], "floor": p50["floor"], "reference": p50["reference"]},
        ),
        Row(
            "warm",
            "time to first byte at the Runtime API, p50 (p95)",
            f"{ms(walls['ours'])} ({ms(p95(wall['ours']))}) ours",
            f"{ms(walls['floor'])} floor; {ms(walls['reference'])} reference",
            f"{walls['ours'] / walls['floor']:.2f}x floor; {walls['ours'] / walls['reference']:.2f}x reference",
            key="warm_ttfb",
            data=walls,
        ),
    ]
    section.rows.append(_aws_calls_before_first_byte(stack, signer, chat_event))
    return section


def _aws_calls_before_first_byte(stack: LocalStack, signer: Any, chat_event: Any) -> Row:
    """Count the Stream app's AWS requests before its first byte (in-process, at our client's HTTP layer)."""
    from stream_app.app import build_app

    pool = stack.pools["StreamFunction"]
    assert stack.moto is not None
    env = {**pool.spec.environment, **pool.aws_env, "AWS_ENDPOINT_URL": stack.moto.endpoint}
    app = build_app(env, time.time)
    counted = {"n": 0}
    for client in (app.store.client, app.secrets.client):
        original = client._send

        def send(
            operation: str, body: bytes, _orig: Callable[[str, bytes], tuple[int, bytes]] = original
        ) -> tuple[int, bytes]:
            counted["n"] += 1
            return _orig(operation, body)

        client._send = send  # type: ignore[method-assign]
    before = []
    for i in range(8):
        counted["n"] = 0
        result = app.handle(json.loads(chat_event(signer.url())))
        body = iter(result.body)
        next(body)
        if i:  # the first one also fetches the secrets
            before.append(counted["n"])
        for _ in body:
            pass
    return Row(
        "warm",
        "AWS requests before the first byte (max)",
        str(max(before)),
        target="<= 3",
        met=max(before) <= 3,
        note="rate-limit update and history query, in parallel; secrets come from the cache",
    )
