"""Build extra functions next to the stack's, invoke them, and read process CPU and memory."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from local.invocation import InvocationFailed, ResponseData, ResponseEnd
from local.pool import FunctionPool
from local.stack import LocalStack

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CLK = os.sysconf("SC_CLK_TCK")


def variant(
    stack: LocalStack,
    base: str,
    name: str,
    *,
    env: dict[str, str] | None = None,
    drop_env: tuple[str, ...] | list[str] = (),
    code_dir: Path | None = None,
    handler: str | None = None,
    layer_dirs: tuple[Path, ...] | None = None,
) -> FunctionPool:
    """A pool for a function derived from one of the template's (same env, layers, AWS endpoint)."""
    spec = stack.pools[base].spec
    environment = {**spec.environment, **(env or {})}
    for key in drop_env:
        environment.pop(key, None)
    new = dataclasses.replace(
        spec,
        logical_id=name,
        name=f"bench-{name}",
        environment=environment,
        code_dir=code_dir or spec.code_dir,
        handler=handler or spec.handler,
        layer_dirs=spec.layer_dirs if layer_dirs is None else layer_dirs,
    )
    # The pool applies its AWS variables after the function's: an endpoint given here must win over them too.
    aws_env = {**stack.pools[base].aws_env, **{k: v for k, v in (env or {}).items() if k in stack.pools[base].aws_env}}
    return FunctionPool(new, aws_env, stack.pools[base].region, stack.logs)


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


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (a runtime, its forked workers and theirs)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            for child in children.read_text().split():
                pids += process_tree(int(child))
    return pids


def process_cpu_ns(pid: int) -> int:
    """CPU time (user + system) of a whole process so far, in nanoseconds, exited threads included.

    The kernel's per-process CPU clock (clockid (~pid << 3) | CPUCLOCK_SCHED, as glibc's clock_getcpuclockid
    makes it): summing /proc/<pid>/task/*/schedstat misses every thread that already ended, and the HTTP
    servers here (moto's werkzeug, the local front, the Runtime API) run each connection on its own thread.
    """
    return time.clock_gettime_ns(((~pid) << 3) | 2)


def user_system_ticks(pid: int) -> tuple[int, int]:
    """(user, system) CPU of a process so far in clock ticks (/proc/<pid>/stat; exited threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def machine_busy_seconds() -> float:
    """CPU time all cores of the machine spent not idle so far (/proc/stat, every process)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


PROBE_LAYER = BENCH / "probe"


def probe_reports(stack: LocalStack, logical_id: str, since: int, count: int) -> list[dict[str, float]]:
    """The `count` JSON lines the probe layer (or the relay) logged for a function from log line `since` on.

    Function output reaches the stack's log through a pipe, a little after the invocation's response.
    """
    deadline = time.monotonic() + 30
    while True:
        reports = [
            json.loads(line)
            for function, line in stack.logs.lines[since:]
            if function == logical_id and line.startswith('{"probe"')
        ]
        if len(reports) >= count or time.monotonic() > deadline:
            assert len(reports) == count, (logical_id, len(reports), count)
            return reports
        time.sleep(0.01)


class Subprocess:
    """A helper process that prints one line (its address) when ready; its CPU is not the function's."""

    def __init__(self, code: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self.process.stdout is not None
        self.address = self.process.stdout.readline().strip()

    def stop(self) -> None:
        """Stop it."""
        self.process.kill()
        self.process.wait()


def keepalive_aws(stack: LocalStack) -> Subprocess:
    """A keep-alive HTTP/1.1 front for moto, in its own process.

    moto's server closes the connection after every response (HTTP/1.0), so each AWS call would pay a new
    TCP connection; Lambda keeps its connections to DynamoDB and Secrets Manager open between invocations.
    """
    assert stack.moto is not None
    return Subprocess(
        "import sys, time; from local.aws_proxy import AwsProxy; p = AwsProxy(int(sys.argv[1])); "
        "print(p.endpoint, flush=True); time.sleep(86400)",
        str(stack.moto.port),
    )


def empty_table(stack: LocalStack) -> int:
    """Delete every item of the stack's table (each section starts from an empty one); returns how many.

    moto copies a whole table for every item of a TransactWriteItems (to roll back), so its write time grows
    with the table: without this, sections that store many turns would slow down the sections after them.
    """
    assert stack.moto is not None
    ddb = stack.moto.client("dynamodb")
    deleted = 0
    for table in ddb.list_tables()["TableNames"]:
        keys: list[dict[str, Any]] = []
        for page in ddb.get_paginator("scan").paginate(TableName=table, ProjectionExpression="pk, sk"):
            keys += page["Items"]
        for start in range(0, len(keys), 25):
            batch = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]
            ddb.batch_write_item(RequestItems={table: batch})
        deleted += len(keys)
    return deleted
