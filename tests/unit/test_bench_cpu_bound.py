"""The four-at-once first-byte bound of `make bench` (bench/cpu_bound.py): its arithmetic, and that it is a bound."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cpu_bound import first_byte_bound, median_rank


def test_median_rank_is_the_median_of_the_ranks() -> None:
    assert [median_rank(n) for n in (1, 2, 3, 4, 5)] == [1.0, 1.5, 2.0, 2.5, 3.0]


def test_the_cores_set_the_step_when_no_shared_process_dominates() -> None:
    bound = first_byte_bound({"workers": 4.0, "moto": 1.0, "bench": 1.0}, {"moto": 1.0, "bench": 1.0}, 2, 4)
    assert (bound.step, bound.median, bound.cores_only, bound.limited_by) == (3.0, 7.5, 7.5, "cores")


def test_a_one_gil_process_sets_the_step_when_its_share_is_larger() -> None:
    bound = first_byte_bound({"workers": 1.0, "moto": 6.0, "bench": 1.0}, {"moto": 1.0, "bench": 1.0}, 2, 4)
    assert (bound.step, bound.median, bound.cores_only, bound.limited_by) == (6.0, 15.0, 10.0, "moto")


def test_only_the_serial_part_of_a_shared_process_counts_on_one_core() -> None:
    bound = first_byte_bound({"workers": 1.0, "moto": 6.0, "bench": 1.0}, {"moto": 0.5, "bench": 1.0}, 2, 4)
    assert (bound.step, bound.limited_by) == (4.0, "cores")


def test_without_shared_processes_it_is_the_core_bound() -> None:
    bound = first_byte_bound({"workers": 3.0}, {}, 1, 3)
    assert (bound.step, bound.median, bound.limited_by) == (3.0, 6.0, "cores")


@pytest.mark.parametrize(
    ("cpu", "serial", "cores", "streams"),
    [
        ({"w": 1.0}, {}, 0, 4),
        ({"w": 1.0}, {}, 2, 0),
        ({"w": -1.0}, {}, 2, 4),
        ({"w": 1.0}, {"w": 1.5}, 2, 4),
    ],
)
def test_nonsense_inputs_are_refused(cpu: dict[str, float], serial: dict[str, float], cores: int, streams: int) -> None:
    with pytest.raises(ValueError):
        first_byte_bound(cpu, serial, cores, streams)


def _schedule(chain: list[tuple[str, int]], streams: int, cores: int, seed: int) -> list[int]:
    """First-byte times of `streams` copies of `chain` started together under a random greedy schedule.

    Each step runs up to `cores` segments, at most one per stream (a chain is sequential) and at most one
    each of the shared one-at-a-time processes "moto" and "bench"; a worker is each stream's own.
    """
    rng = random.Random(seed)
    position = [0] * streams
    left = [chain[0][1]] * streams
    done: list[int] = [0] * streams
    tick = 0
    while not all(done):
        tick += 1
        busy: set[str] = set()
        running = 0
        order = list(range(streams))
        rng.shuffle(order)
        for s in order:
            if done[s] or running == cores:
                continue
            process = chain[position[s]][0]
            if process != "workers" and process in busy:
                continue
            busy.add(process)
            running += 1
            left[s] -= 1
            if left[s] == 0:
                position[s] += 1
                if position[s] == len(chain):
                    done[s] = tick
                else:
                    left[s] = chain[position[s]][1]
    return done


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["workers", "moto", "bench"]), st.integers(1, 4)), min_size=1, max_size=6),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(0, 2**32),
)
def test_no_schedule_beats_the_bound(chain: list[tuple[str, int]], streams: int, cores: int, seed: int) -> None:
    cpu = {g: float(sum(t for p, t in chain if p == g)) for g in ("workers", "moto", "bench")}
    bound = first_byte_bound(cpu, {"moto": 1.0, "bench": 1.0}, cores, streams)
    assert statistics.median(_schedule(chain, streams, cores, seed)) >= bound.median - 1e-9
