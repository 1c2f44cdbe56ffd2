"""Build extra functions next to the stack's, invoke them, and read process CPU and memory."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from local.invocation import InvocationFailed, ResponseData, ResponseEnd
from local.pool import FunctionPool
from local.stack import LocalStack

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CLK = os.sysconf("SC_CLK_TCK")


def variant(stack: LocalStack, base: str, name: str, **changes: object) -> FunctionPool:
    """A pool for a function derived from one of the template's (same env, layers, AWS endpoint)."""
    spec = stack.pools[base].spec
    env = dict(spec.environment)
    env.update(changes.pop("env", {}))  # type: ignore[arg-type]
    for key in changes.pop("drop_env", ()):  # type: ignore[attr-defined]
        env.pop(key, None)
    new = dataclasses.replace(spec, logical_id=name, name=f"bench-{name}", environment=env, **changes)  # type: ignore[arg-type]
    return FunctionPool(new, stack.pools[base].aws_env, stack.pools[base].region, stack.logs)


def invoke(pool: FunctionPool, event: bytes) -> tuple[float, float, float, bytes]:
    """(start, first body byte, end, body) of one invocation through the Runtime API."""
    start = time.perf_counter()
    inv = pool.invoke(event)
    first = 0.0
    parts = []
    while True:
        item = inv.events.get(timeout=120)
        if isinstance(item, ResponseData):
            first = first or time.perf_counter()
            parts.append(item.data)
        elif isinstance(item, (ResponseEnd, InvocationFailed)):
            if isinstance(item, InvocationFailed) or item.error_type:
                raise RuntimeError(f"invocation failed: {item}")
            return start, first, time.perf_counter(), b"".join(parts)


def environment_pids(pool: FunctionPool) -> list[int]:
    """Processes of the pool's environments (the runtime and any forked workers)."""
    pids = []
    for env in pool.environments:
        pids.append(env.process.pid)
        children = Path(f"/proc/{env.process.pid}/task/{env.process.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")
