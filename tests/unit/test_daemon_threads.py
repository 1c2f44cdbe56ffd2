"""DaemonThreads (turn watchers): many jobs at once, reuse, and a thread that cannot be started."""

from __future__ import annotations

import threading
from concurrent.futures import wait
from typing import Any

import pytest

from sigstream.adapters.thread_pool import DaemonThreads


def test_many_jobs_at_once_all_run_and_their_threads_are_reused() -> None:
    threads = DaemonThreads("many")
    gate = threading.Event()
    names: set[int] = set()

    def job() -> int:
        gate.wait(10)
        names.add(threading.get_ident())
        return 1

    first = [threads.submit(job) for _ in range(100)]  # 100 turns stream at once: 100 watchers wait together
    gate.set()
    assert sum(f.result(10) for f in first) == 100
    used = set(names)
    names.clear()
    again = [threads.submit(lambda: names.add(threading.get_ident())) for _ in range(50)]
    wait(again, 10)
    assert names <= used  # no new thread for work idle threads can take


def test_a_job_whose_thread_could_not_start_never_runs_later(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = DaemonThreads("no-start")
    ran: list[str] = []
    start = threading.Thread.start

    def refuse(self: threading.Thread, *args: Any) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError):
        threads.submit(ran.append, "orphan")  # the caller was told it failed (a watch that never started)
    monkeypatch.setattr(threading.Thread, "start", start)
    assert threads.submit(ran.append, "next").result(5) is None
    assert ran == ["next"]
    together = threading.Barrier(3, timeout=5)  # two jobs that can only finish while running at the same time
    both = [threads.submit(together.wait) for _ in range(2)]
    together.wait()
    wait(both, 5)
    assert all(f.exception() is None for f in both)
