"""While a reply streams: checkpoint its text, keep its lease, and notice a stop request (one background thread).

Once a second the watcher writes the text so far (a conditional update that fails when a stop was asked for) or,
when no new text came, reads the reply's stop flag; so a stop is noticed within about a second even while the
provider is silent. On a stop it aborts the upstream response from its own thread: the relay's blocked read
returns and the turn ends. Checkpoints are bounded per turn: at most one a second, fewer as the text grows
(at most CHECKPOINT_BYTES_PER_SECOND written on average), and never more than MAX_CHECKPOINTS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future

from stream_app.adapters.history_store import HistoryStore, StopSignal, StoredMessage
from stream_app.observability import logger

CHECK_SECONDS = 1.0  # how often a stop request is looked for (by a checkpoint or a read)
CHECKPOINT_BYTES_PER_SECOND = 8192  # long texts are checkpointed less often: ~8 write units a second at most
MAX_CHECKPOINTS = 300
LEASE_SECONDS = 30  # a reply in progress whose lease ran out reads as incomplete (its turn died)


def lease_until(now: float, deadline: float | None) -> int:
    """Lease end for a write made now: never past the invocation's own deadline (Lambda ends it there)."""
    until = now + LEASE_SECONDS
    if deadline is not None:
        until = min(until, deadline + 2)
    return int(until) + 1


class TurnWatch:
    """The background side of one streaming turn in a conversation."""

    def __init__(
        self,
        store: HistoryStore,
        conversation_id: str,
        reply: StoredMessage,
        begun: Future[None],
        text: Callable[[], str],
        on_stop: Callable[[StopSignal], None],
        runner: Executor,
        *,
        clock: Callable[[], float] = time.time,
        deadline: float | None = None,
        checkpoints: bool = True,
    ) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.reply = reply
        self.begun = begun
        self.text = text
        self.on_stop = on_stop
        self.clock = clock
        self.deadline = deadline
        self.checkpoints_on = checkpoints
        self.checkpoints = 0
        self.polls = 0
        self.failures = 0
        self.signal: StopSignal | None = None
        self._done = threading.Event()
        # A pooled thread, not a new one per turn: starting a thread cost ~0.15 ms before the first byte.
        self._runner = runner
        self._running: Future[None] | None = None
        self._thread: threading.Thread | None = None  # the thread running this watch, once it runs

    def lease(self, now: float) -> int:
        """Lease end for a write made now."""
        return lease_until(now, self.deadline)

    def start(self) -> None:
        """Start watching (returns at once)."""
        self._running = self._runner.submit(self._run)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; waits for a write in flight, so no checkpoint lands after the final write starts."""
        self._done.set()
        running = self._running
        if running is None or running.cancel() or threading.current_thread() is self._thread:
            return  # never started, or not started yet (now it never will), or called from the watch itself
        try:
            running.result(timeout)
        except Exception:  # a watch that failed or outlived the timeout writes nothing more that matters
            return

    def _run(self) -> None:
        self._thread = threading.current_thread()
        try:
            self.begun.result()  # the reply must exist before it can be checkpointed
        except Exception:
            return  # the turn is stored at its end instead; nothing to watch
        written, last = 0, self.clock()
        lease = self.reply.lease_until or 0
        while not self._done.wait(CHECK_SECONDS):
            now = self.clock()
            text = self.text()
            size = len(text.encode("utf-8", "surrogatepass"))
            due = now - last >= max(CHECK_SECONDS, size / CHECKPOINT_BYTES_PER_SECOND)
            try:
                if self.checkpoints_on and len(text) != written and due and self.checkpoints < MAX_CHECKPOINTS:
                    lease = self.lease(now)
                    signal = self.store.checkpoint(self.conversation_id, self.reply, text, lease)
                    self.checkpoints += 1
                    written, last = len(text), now
                else:
                    signal = self.store.stop_signal(self.conversation_id, self.reply)
                    self.polls += 1
                    if lease - now < LEASE_SECONDS / 2:  # silent provider: keep the reply visibly alive
                        lease = self.lease(now)
                        self.store.renew_lease(self.conversation_id, self.reply, lease)
            except Exception as exc:  # the stream goes on; the final write still stores the turn
                self.failures += 1
                if self.failures in (1, 10):
                    logger.warning("checkpoint failed", extra={"error": type(exc).__name__})
                continue
            if signal is not None and not self._done.is_set():
                self.signal = signal
                self.on_stop(signal)
                return
