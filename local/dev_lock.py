"""One `make dev` per checkout: a second one says where the first is instead of clobbering its files."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO


class AlreadyRunningError(Exception):
    """Another `make dev` holds the lock; the message says where it is."""


class DevLock:
    """An exclusive flock on .local/dev.lock, held for the life of the process (released even on a crash)."""

    def __init__(self, handle: IO[str], path: Path) -> None:
        self._handle = handle
        self.path = path

    @classmethod
    def acquire(cls, state_dir: Path) -> DevLock:
        """Take the lock, or raise AlreadyRunningError naming the running stack."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / "dev.lock"
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            handle.close()
            where = f" (pid {holder['pid']})" if "pid" in holder else ""
            page = f", chat page {holder['web_url']}" if holder.get("web_url") else ""
            raise AlreadyRunningError(
                f"a local stack is already running in this checkout{where}{page}; its endpoints are in "
                f"{state_dir / 'endpoints.json'}. Stop it (Ctrl-C in its terminal) before starting another."
            ) from None
        lock = cls(handle, path)
        lock.describe({})
        return lock

    def describe(self, info: dict[str, str]) -> None:
        """Record who holds the lock (pid, and the chat page once it is up) for a second `make dev`."""
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps({"pid": os.getpid(), **info}))
        self._handle.flush()

    def release(self) -> None:
        """Drop the lock."""
        self._handle.close()
