"""State made before the runtime forks its workers is never shared with them by accident."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from sigstream.adapters.per_process import PerProcess
from sigstream.adapters.thread_pool import DaemonThreads, ProcessThreadPool
from sigstream_runtime.bootstrap import threads_before_fork


def in_child(check: Callable[[], bool]) -> bool:
    """Run `check` in a forked child; whether it returned True (within 20 s, so a deadlock fails)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            ok = check()
        except BaseException:
            ok = False
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_end)
    watchdog = threading.Timer(20, os.kill, (pid, 9))
    watchdog.start()
    os.waitpid(pid, 0)
    watchdog.cancel()
    answer = os.read(read_end, 1)
    os.close(read_end)
    return answer == b"1"


def test_a_forked_child_makes_its_own_value() -> None:
    made: list[int] = []
    value = PerProcess(lambda: made.append(os.getpid()) or object())
    parent = value.get()
    assert value.get() is parent
    assert in_child(lambda: value.get() is not parent and value.get() is value.get())
    assert value.get() is parent


def test_a_thread_pool_used_before_the_fork_still_runs_work_in_the_child() -> None:
    pool = ProcessThreadPool(max_workers=2)
    assert pool.submit(lambda: 1).result(timeout=5) == 1  # the parent's threads exist now
    # A plain ThreadPoolExecutor would hand the job to threads that do not exist in the child: a hang.
    assert in_child(lambda: pool.submit(os.getpid).result(timeout=5) == os.getpid())


def test_daemon_threads_are_reused_never_hold_up_exit_and_run_work_in_a_forked_child() -> None:
    pool = DaemonThreads("watch")
    first = pool.submit(threading.current_thread).result(timeout=5)
    assert first.daemon and first.name == "watch"
    threading.Event().wait(0.05)  # the thread is idle again
    assert pool.submit(threading.current_thread).result(timeout=5) is first  # a handoff, not a new thread
    release = threading.Event()

    def hold() -> threading.Thread:
        release.wait(5)
        return threading.current_thread()

    busy = pool.submit(hold)
    other = pool.submit(threading.current_thread).result(timeout=5)  # not queued behind the job that waits
    assert not release.is_set()
    release.set()
    assert busy.result(timeout=5) is not other  # one thread per job running at once
    failed = pool.submit(lambda: 1 // 0)
    assert isinstance(failed.exception(timeout=5), ZeroDivisionError)
    assert in_child(lambda: pool.submit(os.getpid).result(timeout=5) == os.getpid())


def test_a_lock_held_at_fork_time_is_not_held_in_the_child() -> None:
    lock = PerProcess(threading.Lock)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock.get():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        assert in_child(lambda: lock.get().acquire(timeout=2))
    finally:
        release.set()
        holder.join()


def test_the_runtime_names_threads_that_exist_before_it_forks() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="preload-something")
    thread.start()
    try:
        assert "preload-something" in threads_before_fork()
    finally:
        stop.set()
        thread.join()
    assert "preload-something" not in threads_before_fork()
