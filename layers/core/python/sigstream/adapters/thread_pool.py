"""A thread pool that is safe to have before the runtime forks its workers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

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
