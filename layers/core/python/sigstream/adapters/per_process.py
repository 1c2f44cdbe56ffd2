"""Values made lazily once per process, so a worker forked by the runtime never shares its parent's.

With AWS_LAMBDA_MAX_CONCURRENCY the runtime forks workers after init. Sockets, connection pools, thread
pools and locks made before the fork would otherwise be copied into every worker: two processes reading
one keep-alive socket, a thread pool whose threads do not exist in the child, a lock held forever.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_lock = threading.Lock()


def _new_lock() -> None:
    # A lock copied into a child could be held by a thread that does not exist there.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock)


class PerProcess(Generic[T]):
    """`get()` returns this process's value, made by `factory` on first use in each process."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._current: tuple[int, T] | None = None  # (pid, value), replaced as one object

    def get(self) -> T:
        """The value for the current process."""
        current = self._current
        pid = os.getpid()
        if current is not None and current[0] == pid:
            return current[1]
        with _lock:
            current = self._current
            if current is None or current[0] != pid:
                current = (pid, self._factory())
                self._current = current
            return current[1]

    def made(self) -> bool:
        """Whether the current process has made its value yet."""
        current = self._current
        return current is not None and current[0] == os.getpid()
