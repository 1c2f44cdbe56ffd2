"""Follow a stored reply while its turn writes it (DynamoDB only, so any instance can serve a reconnect).

Reads the reply's item with back-off (checkpoints come at most once a second), yields the text the client does
not have yet, and ends when the reply is final, its lease ran out (its turn died: incomplete), or the bound on
reads or time is reached. Used by GET /v1/conversations/{id}/stream (OpenAI SSE); the AI SDK's reconnect route
encodes the same steps as a UI message stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from stream_app.adapters.history_store import IN_PROGRESS, HistoryStore, StoredMessage
from stream_app.chat.resume import ReplyProgress, TextFollower

FIRST_WAIT = 0.25
MAX_WAIT = 2.0
BACKOFF = 1.5
MAX_READS = 400  # about ten minutes at the longest wait: past any turn (the function's timeout is 300 s)
KEEPALIVE_SECONDS = 15.0


def follow_reply(
    store: HistoryStore,
    conversation_id: str,
    reply: StoredMessage,
    *,
    after: int = 0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    deadline: float | None = None,
    max_reads: int = MAX_READS,
) -> Iterator[ReplyProgress]:
    """Steps of `reply` (as first read) from character `after` on, until it ends; the last step has a status."""
    follower = TextFollower(after)
    current: StoredMessage | None = reply
    wait, quiet_since, reads = FIRST_WAIT, clock(), 0
    while True:
        if current is None:  # deleted while followed
            yield ReplyProgress(position=follower.sent, status="incomplete")
            return
        now = clock()
        text = current.message.text()
        status = current.effective_status(now)
        delta = follower.advance(text)
        if status != IN_PROGRESS:
            calls = tuple(c.to_openai() for c in current.message.tool_calls)
            yield ReplyProgress(delta, follower.sent, status, current.finish_reason, calls)
            return
        if delta:
            yield ReplyProgress(delta, follower.sent)
            wait, quiet_since = FIRST_WAIT, now
        else:
            wait = min(wait * BACKOFF, MAX_WAIT)
            if now - quiet_since >= KEEPALIVE_SECONDS:
                yield ReplyProgress(position=follower.sent, keepalive=True)
                quiet_since = now
        reads += 1
        if reads >= max_reads or (deadline is not None and now + wait >= deadline):
            yield ReplyProgress(position=follower.sent, status="incomplete")  # we stop following, not the turn
            return
        sleep(wait)
        current = store.message_at(conversation_id, reply.seq)
