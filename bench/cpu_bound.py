"""A lower bound for the first byte of streams started together, from the CPU each one needs (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FirstByteBound:
    """How early the first bytes of streams started together can come, at best."""

    step: float  # seconds: the k-th first byte comes no earlier than k * step
    median: float  # seconds: the least possible median first byte (step * the median rank)
    cores_only: float  # the same median bound from the core count alone, ignoring one-at-a-time processes
    limited_by: str  # "cores", or the process whose one-at-a-time share sets the step


def median_rank(streams: int) -> float:
    """The median of the ranks 1..streams (2.5 for four): the bound's median in steps."""
    return float(statistics.median(range(1, streams + 1)))


def first_byte_bound(
    cpu: Mapping[str, float], serial: Mapping[str, float], cores: float, streams: int
) -> FirstByteBound:
    """The least median first byte of `streams` streams started at once, each needing `cpu` (s, by process).

    The k-th stream to get its first byte needs the pre-first-byte CPU of k streams done: all of it on at most
    `cores` cores (a fraction when other work holds part of them), and the fraction `serial[p]` of process p's share (a process all streams share, whose Python
    code runs one thread at a time under its GIL) on one core. So t_k >= k * step with
    step = max(sum(cpu) / cores, max(cpu[p] * serial[p])), and the median first byte is at least step times the
    median rank (also over several such batches pooled: each adds every rank once).
    """
    if cores <= 0 or streams < 1:
        raise ValueError("cores must be > 0 and streams >= 1")
    if any(v < 0 for v in cpu.values()):
        raise ValueError("CPU times must be >= 0")
    if any(not 0 <= f <= 1 for f in serial.values()):
        raise ValueError("serial fractions must be between 0 and 1")
    per_core = sum(cpu.values()) / cores
    one_core, name = max(((cpu.get(p, 0.0) * f, p) for p, f in serial.items()), default=(0.0, ""))
    step = max(per_core, one_core)
    rank = median_rank(streams)
    return FirstByteBound(step, step * rank, per_core * rank, "cores" if per_core >= one_core else name)
