"""Thread pools that are safe to have before the runtime forks its workers."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from sigstream.adapters.per_process import PerProcess

T = TypeVar("T")
P = ParamSpec("P")


class ProcessThreadPool(Executor):
    """A thread pool made on first use in each process: threads never survive a fork, so none is inherited."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "") -> None:
        self._pool = PerProcess(lambda: ThreadPoolExecutor(max_workers, thread_name_prefix))

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run fn(*args, **kwargs) on this process's pool."""
        return self._pool.get().submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop this process's pool, if it has one."""
        if self._pool.made():
            self._pool.get().shutdown(wait, cancel_futures=cancel_futures)


class _Daemons:
    """One process's daemon threads and their queue of jobs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.idle = 0  # threads that have finished a job and will take the next one

    def work(self) -> None:
        while True:
            future, job = self.jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:  # the caller sees it through the future
                    future.set_exception(exc)
            del future, job  # an idle thread keeps nothing of the job it ran alive
            with self.lock:
                self.idle += 1


class DaemonThreads(Executor):
    """Reused daemon threads, as many as jobs run at once, made per process.

    For jobs that wait as long as a response streams: unlike ThreadPoolExecutor's threads they never hold up the
    interpreter's exit, and unlike a new thread per job they cost a queue handoff, not a thread start.
    """

    def __init__(self, thread_name: str) -> None:
        self._daemons = PerProcess(lambda: _Daemons(thread_name))

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run fn(*args, **kwargs) on an idle daemon thread, or a new one."""
        daemons = self._daemons.get()
        future: Future[T] = Future()
        with daemons.lock:
            start = daemons.idle == 0
            if not start:
                daemons.idle -= 1
        if start:  # before the job is queued: a thread that cannot start leaves no job behind to run later
            threading.Thread(target=daemons.work, name=daemons.name, daemon=True).start()
        daemons.jobs.put((future, lambda: fn(*args, **kwargs)))
        return future
