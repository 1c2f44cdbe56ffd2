"""Following a stored reply for the resume route: back-off, bounded reads, the lease, Last-Event-ID."""

from __future__ import annotations

from typing import Any

from stream_app.adapters.history_store import IN_PROGRESS, StoredMessage
from stream_app.chat.messages import Message
from stream_app.reply_follow import FIRST_WAIT, MAX_WAIT, follow_reply


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def reply(text: str, status: str = IN_PROGRESS, lease: float = 2000, **extra: Any) -> StoredMessage:
    return StoredMessage(Message("assistant", text), status=status, lease_until=int(lease), seq=2, **extra)


class _Store:
    """Returns the reply as each successive read finds it."""

    def __init__(self, versions: list[StoredMessage | None]) -> None:
        self.versions = versions
        self.reads = 0

    def message_at(self, conversation_id: str, seq: int) -> StoredMessage | None:
        self.reads += 1
        return self.versions[min(self.reads - 1, len(self.versions) - 1)]


def test_new_text_is_sent_once_and_the_final_status_ends_the_stream() -> None:
    clock = _Clock()
    store = _Store([reply("Hello, wor"), reply("Hello, wor"), reply("Hello, world!", "complete", finish_reason="stop")])
    steps = list(follow_reply(store, "c", reply("Hello"), after=3, clock=clock.time, sleep=clock.sleep))  # type: ignore[arg-type]
    assert [(s.delta, s.position, s.status) for s in steps] == [
        ("lo", 5, None),
        (", wor", 10, None),
        ("ld!", 13, "complete"),
    ]
    assert steps[-1].finish_reason == "stop"
    assert clock.sleeps[0] == FIRST_WAIT and clock.sleeps[2] > FIRST_WAIT  # backs off while nothing changes


def test_a_reply_whose_lease_ran_out_ends_incomplete() -> None:
    clock = _Clock()
    store = _Store([reply("abc", lease=1000.5)])
    steps = list(follow_reply(store, "c", reply("abc", lease=1000.5), clock=clock.time, sleep=clock.sleep))  # type: ignore[arg-type]
    assert [(s.delta, s.status) for s in steps] == [("abc", None), ("", "incomplete")]


def test_reads_are_bounded_and_waits_capped() -> None:
    clock = _Clock()
    store = _Store([reply("same")])
    steps = list(
        follow_reply(store, "c", reply("same"), after=4, clock=clock.time, sleep=clock.sleep, max_reads=30)  # type: ignore[arg-type]
    )
    assert store.reads == 29 and steps[-1].status == "incomplete"  # we stop following, the turn goes on
    assert max(clock.sleeps) == MAX_WAIT
    assert any(s.keepalive for s in steps)  # proxies see bytes during a long silence


def test_a_deleted_reply_ends_the_stream() -> None:
    clock = _Clock()
    steps = list(follow_reply(_Store([None]), "c", reply("x"), after=1, clock=clock.time, sleep=clock.sleep))  # type: ignore[arg-type]
    assert steps[-1].status == "incomplete"
