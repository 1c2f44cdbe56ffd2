"""AWS_LAMBDA_MAX_CONCURRENCY=4: four streams at once in one environment (Lambda Managed Instances)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.contenders import floor_pool
from bench.cpu_bound import first_byte_bound, median_rank
from bench.harness import machine_busy_seconds, process_cpu_ns, process_tree, user_system_ticks, variant
from bench.report import Row, Section
from bench.stats import median, ms
from local.function_url import FunctionUrlServer
from local.pool import FunctionPool
from local.stack import LocalStack

WORKERS = 4
BODY = json.dumps(
    {"model": "local-echo-1", "stream": True, "messages": [{"role": "user", "content": "one two three four five"}]}
).encode()
# The processes every stream runs through, and those that are one Python process (one GIL) for all streams.
GROUPS = {"workers": "function workers", "moto": "moto server", "bench": "bench process"}
SERIAL = ("moto", "bench")
GAP = 0.03  # before each lone stream: the previous one's work after its last byte (final write, /next) is done
SETTLE = 0.1  # after a phase, so the CPU it caused after the client's last byte is counted in it


class CpuMeter:
    """CPU so far (ns) of each group of processes."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids

    def read(self) -> dict[str, int]:
        """One reading per group."""
        return {group: sum(process_cpu_ns(pid) for pid in pids) for group, pids in self.pids.items()}


class RequestTap(list[dict[str, Any]]):
    """Stands in for the embedded upstream's request log: reads the CPU meter when a chat request arrives.

    The upstream appends each request as soon as it has read it, before it answers: that reading is the
    CPU a stream needed until the provider had its request, in the same thread, without polling.
    """

    def __init__(self, meter: CpuMeter) -> None:
        super().__init__()
        self.meter = meter
        self.armed = False
        self.marks: list[tuple[float, dict[str, int]]] = []

    def append(self, item: dict[str, Any]) -> None:
        """Log the request (and, when armed, the time and CPU readings of its arrival)."""
        if self.armed:
            self.marks.append((time.monotonic(), self.meter.read()))
        super().append(item)


@dataclass
class Measured:
    """One function's run: first bytes, completions, and CPU per stream by process group (s)."""

    single: list[float]
    together: list[float]
    complete: int
    environments: int
    before: dict[str, float] = field(default_factory=dict)  # lone streams' median, until the upstream had the request
    until_first: dict[str, float] = field(default_factory=dict)  # lone streams' median, until the first byte
    before_mean: dict[str, float] = field(default_factory=dict)  # lone streams' mean, until the upstream had it
    alone: dict[str, float] = field(default_factory=dict)  # mean per lone stream, everything it caused
    at_once: dict[str, float] = field(default_factory=dict)  # mean per stream of the four-at-once batches
    serial: dict[str, float] = field(default_factory=dict)  # user CPU's fraction of the shared processes' CPU
    others: float = 0.0  # cores other processes of the machine kept busy during the four-at-once batches
    others_alone: float = 0.0  # the same during the lone streams


def _wait_ready(pool: FunctionPool) -> None:
    deadline = time.monotonic() + 30
    while pool.idle_slots < WORKERS and time.monotonic() < deadline:
        time.sleep(0.01)


def _warm(pool: FunctionPool, url: Callable[[], str], http_first_byte: Any) -> None:
    """Start the environment (init once, then fork), then give every worker streams of its own.

    Each worker process fills its own caches (secrets, connections, lazy imports) on its first stream: left
    to the measured lone streams, that work would count as what every stream needs.
    """
    http_first_byte(url(), BODY)
    for _ in range(2):
        _wait_ready(pool)
        with ThreadPoolExecutor(WORKERS) as ex:
            list(ex.map(lambda target: http_first_byte(target, BODY), [url() for _ in range(WORKERS)]))
    time.sleep(SETTLE)
    _wait_ready(pool)


def _per_stream(total: dict[str, float], idle: dict[str, float], seconds: float, streams: int) -> dict[str, float]:
    """CPU (ns) over a span, less the group's idle rate over it, per stream, in seconds."""
    return {g: max(total[g] - idle[g] * seconds, 0.0) / streams / 1e9 for g in total}


def _measure(
    stack: LocalStack, pool: FunctionPool, url: Callable[[], str], http_first_byte: Any, rounds: int
) -> Measured:
    """Lone streams, then four at once, `rounds` times; with the CPU each process spends per stream."""
    assert stack.upstream is not None and stack.moto is not None
    _warm(pool, url, http_first_byte)
    workers = [pid for env in pool.environments for pid in process_tree(env.process.pid)]
    meter = CpuMeter({"workers": workers, "moto": [stack.moto.process.pid], "bench": [os.getpid()]})
    tap = RequestTap(meter)
    control = stack.upstream.control
    with control.lock:
        control.requests = tap
    # Background CPU with no stream (server poll loops, watchdog threads): taken out of every figure.
    start, since = meter.read(), time.monotonic()
    time.sleep(0.5)
    now, quiet = meter.read(), time.monotonic() - since
    idle = {g: (now[g] - start[g]) / quiet for g in now}
    out = Measured([], [], 0, 0)
    before: dict[str, list[float]] = {g: [] for g in GROUPS}
    until_first: dict[str, list[float]] = {g: [] for g in GROUPS}
    ticks = {g: [0, 0] for g in SERIAL}
    alone = dict.fromkeys(GROUPS, 0.0)
    at_once = dict.fromkeys(GROUPS, 0.0)
    alone_s = at_once_s = busy = ours = busy_alone = ours_alone = 0.0
    firsts: list[tuple[float, dict[str, int]]] = []  # the time and CPU readings at a lone stream's first byte
    for _ in range(rounds):
        phase, since, machine = meter.read(), time.monotonic(), machine_busy_seconds()
        was = {g: user_system_ticks(meter.pids[g][0]) for g in SERIAL}
        for _ in range(WORKERS):
            time.sleep(GAP)
            tap.marks.clear()
            firsts.clear()
            target = url()
            tap.armed, begun, reading = True, time.monotonic(), meter.read()
            ttfb, _, data = http_first_byte(target, BODY, lambda: firsts.append((time.monotonic(), meter.read())))
            tap.armed = False
            assert data.endswith(b"data: [DONE]\n\n"), data[-200:]
            assert tap.marks, "the upstream never received the request"
            (arrived, mark), (first_at, first) = tap.marks[0], firsts[0]
            for g in GROUPS:
                before[g].append(max(mark[g] - reading[g] - idle[g] * (arrived - begun), 0.0) / 1e9)
                until_first[g].append(max(first[g] - reading[g] - idle[g] * (first_at - begun), 0.0) / 1e9)
            out.single.append(ttfb)
        time.sleep(SETTLE)
        now = meter.read()
        for g in GROUPS:
            alone[g] += now[g] - phase[g]
        for g in SERIAL:
            user, system = user_system_ticks(meter.pids[g][0])
            ticks[g][0] += user - was[g][0]
            ticks[g][1] += system - was[g][1]
        alone_s += time.monotonic() - since
        busy_alone += machine_busy_seconds() - machine
        ours_alone += sum(now[g] - phase[g] for g in GROUPS) / 1e9

        urls = [url() for _ in range(WORKERS)]
        barrier = threading.Barrier(WORKERS)

        def one(target: str, barrier: threading.Barrier = barrier) -> tuple[float, bool]:
            barrier.wait()
            ttfb, _, data = http_first_byte(target, BODY)
            return ttfb, data.endswith(b"data: [DONE]\n\n")

        phase, since, machine = meter.read(), time.monotonic(), machine_busy_seconds()
        with ThreadPoolExecutor(WORKERS) as ex:
            results = list(ex.map(one, urls))
        time.sleep(SETTLE)  # and every worker is back in /next
        now, spent = meter.read(), time.monotonic() - since
        for g in GROUPS:
            at_once[g] += now[g] - phase[g]
        at_once_s += spent
        busy += machine_busy_seconds() - machine
        ours += sum(now[g] - phase[g] for g in GROUPS) / 1e9
        out.together += [t for t, _ in results]
        out.complete += sum(ok for _, ok in results)
    streams = rounds * WORKERS
    out.environments = len(pool.environments)
    out.before = {g: median(v) for g, v in before.items()}
    out.before_mean = {g: sum(v) / len(v) for g, v in before.items()}
    out.until_first = {g: median(v) for g, v in until_first.items()}
    out.serial = {g: user / max(user + system, 1) for g, (user, system) in ticks.items()}
    out.alone = _per_stream(alone, idle, alone_s, streams)
    out.at_once = _per_stream(at_once, idle, at_once_s, streams)
    out.others = max(busy - ours, 0.0) / at_once_s
    out.others_alone = max(busy_alone - ours_alone, 0.0) / alone_s
    return out


def _by_process(cpu: dict[str, float]) -> str:
    return f"{ms(sum(cpu.values()))}: " + ", ".join(f"{GROUPS[g]} {ms(cpu[g])}" for g in GROUPS)


PHASES = {
    "before": "lone stream, until the upstream has the request (median)",
    "until_first": "lone stream, until its first byte (median)",
    "alone": "whole lone stream (mean)",
    "at_once": f"whole stream, {WORKERS} at once (mean)",
}


def _table(ours: Measured, floor: Measured) -> str:
    lines = [
        "CPU per stream by process (each process's idle background taken out; the whole-stream means include "
        "what a stream costs after its last byte):",
        "",
        "| function: span | " + " | ".join(GROUPS.values()) + " | all |",
        "|---|" + "---|" * (len(GROUPS) + 1),
    ]
    for name, m in (("ours", ours), ("floor", floor)):
        for phase, label in PHASES.items():
            cpu: dict[str, float] = getattr(m, phase)
            cells = [ms(cpu[g]) for g in GROUPS] + [ms(sum(cpu.values()))]
            lines.append(f"| {name}: {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        ours = _measure(stack, ours_pool, ours_url, http_first_byte, rounds)
        fl = _measure(stack, floor, lambda: servers[1].url, http_first_byte, rounds)
    finally:
        stack.upstream.control.update({"reset": True})
        for server in servers:
            server.stop()
        ours_pool.close()
        floor.close()
    single, together = median(ours.single), median(ours.together)
    f_single, f_together = median(fl.single), median(fl.together)
    ratio, floor_ratio = together / single, f_together / f_single
    cores = os.cpu_count() or 1
    bound = first_byte_bound(ours.before, ours.serial, cores, WORKERS)
    f_bound = first_byte_bound(fl.before, fl.serial, cores, WORKERS)
    total = rounds * WORKERS
    section = Section(
        "AWS_LAMBDA_MAX_CONCURRENCY=4",
        f"The Stream function with `AWS_LAMBDA_MAX_CONCURRENCY={WORKERS}` (the runtime forks {WORKERS} workers after "
        f"init) behind a local Function URL, warm, upstream pacing 20 ms per token; each stream its own "
        f"conversation. {rounds} rounds of {WORKERS} streams one after another ({GAP * 1000:.0f} ms apart), then "
        f"{WORKERS} at once (a barrier); time to first byte at the HTTP client. The floor handler is measured the "
        "same way with the same setting. CPU is each process's own CPU clock (user + system, nanoseconds, exited "
        "threads included) read around every lone stream and at the moment the embedded upstream has read its "
        "request, less each process's idle rate measured first; the bench process holds the HTTP client, the "
        "Function URL front, the Runtime API and the upstream. Lower bound: the k-th of the "
        f"{WORKERS} streams started together cannot have its first byte before the CPU k streams need until the "
        f"upstream has their request is done: all of it on at most {cores} cores, and the user-mode part of moto's "
        "and of the bench process's share on one core each (each is one Python process for all streams, so one "
        "GIL; moto also takes DynamoDB requests one at a time). So t_k >= k * max(C / "
        f"{cores}, u_moto * C_moto, u_bench * C_bench) and the median of the {WORKERS} first bytes is at least "
        f"{median_rank(WORKERS):g}x that step (C: the lone streams' median CPU by process; u: the user share of "
        "that process's CPU over the lone streams). The bound leaves out the CPU of relaying the first token, the "
        "work earlier streams still do after their request, and whatever contention adds, so the true least is "
        "higher.",
    )
    section.extra = _table(ours, fl)
    data: dict[str, float] = {"cores": cores, "streams": WORKERS}
    for name, m in (("", ours), ("floor_", fl)):
        for phase in (*PHASES, "before_mean"):
            for g in GROUPS:
                data[f"{name}{phase}_{g}"] = getattr(m, phase)[g]
        for g in SERIAL:
            data[f"{name}serial_{g}"] = m.serial[g]
        data[f"{name}others"], data[f"{name}others_alone"] = m.others, m.others_alone
    section.rows += [
        Row(
            "max concurrency",
            f"{WORKERS} concurrent streams in one environment: completed",
            f"{ours.complete}/{total} in {ours.environments} environment(s)",
            target=f"{total}/{total}, 1 environment",
            met=ours.complete == total and ours.environments == 1,
            key="lmi_complete",
            data={"complete": ours.complete, "total": total, "environments": ours.environments},
        ),
        Row(
            "max concurrency",
            "first byte, 4 at once vs one at a time, p50",
            f"{ms(together)} vs {ms(single)}",
            f"floor: {ms(f_together)} vs {ms(f_single)} ({floor_ratio:.2f}x)",
            f"{ratio:.2f}x",
            "<= 1.5x",
            ratio <= 1.5,
            key="lmi_ttfb",
            data={
                "together": together,
                "single": single,
                "worst": max(ours.together),
                "floor_together": f_together,
                "floor_single": f_single,
            },
        ),
        Row(
            "max concurrency",
            "CPU per lone stream until the upstream has the request, by process",
            _by_process(ours.before),
            "floor: " + _by_process(fl.before),
            key="lmi_cpu",
            data=data,
        ),
        Row(
            "max concurrency",
            f"first byte, {WORKERS} at once: least possible p50 from that CPU on {cores} cores",
            f">= {ms(bound.median)} ({bound.median / single:.2f}x the lone {ms(single)})",
            f"floor: >= {ms(f_bound.median)} ({f_bound.median / f_single:.2f}x)",
            f"{bound.median / single:.2f}x (measured {ratio:.2f}x)",
            key="lmi_bound",
            data={"bound": bound.median, "floor_bound": f_bound.median},
        ),
    ]
    return section
