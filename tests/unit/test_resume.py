"""Resuming a reply (pure): Last-Event-ID parsing, the OpenAI resume encoder, the UI message stream adapter."""

from __future__ import annotations

import json

import pytest

from sigstream.core.errors import BadRequestError
from stream_app.chat.resume import (
    OpenAiResumeEncoder,
    ReplyProgress,
    TextFollower,
    parse_last_event_id,
)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("  ", None), ("0", 0), ("42", 42)])
def test_last_event_ids_this_gateway_sends_are_positions(value: str | None, expected: int | None) -> None:
    assert parse_last_event_id(value) == expected


@pytest.mark.parametrize("value", ["-1", "1e3", "0x10", "²", "9" * 11, "1000000001", "1 2"])
def test_anything_else_is_a_400_naming_the_header(value: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_last_event_id(value)
    assert caught.value.param == "last-event-id"


def test_the_follower_sends_only_what_the_client_lacks() -> None:
    follower = TextFollower(after=5)
    assert follower.advance("Hello") == "" and follower.advance("Hello, world") == ", world"
    assert follower.advance("Hello") == ""  # a stop may shorten the stored text: nothing is taken back


def _events(body: bytes) -> list[tuple[int | None, object]]:
    out: list[tuple[int | None, object]] = []
    for event in body.split(b"\n\n"):
        if not event.strip():
            continue
        ident, data = None, None
        for line in event.split(b"\n"):
            if line.startswith(b"id: "):
                ident = int(line[4:])
            elif line.startswith(b"data: "):
                data = line[6:].decode()
        out.append((ident, data if data == "[DONE]" else json.loads(data or "null")))
    return out


def test_the_openai_resume_stream_carries_positions_and_ends_like_the_live_one() -> None:
    encoder = OpenAiResumeEncoder("msg_abc", "local-echo-1", 1700000000)
    body = encoder.encode(ReplyProgress("lo, ", 7)) + encoder.encode(ReplyProgress("world", 12, "complete", "stop"))
    events = _events(body)
    assert [e[0] for e in events] == [3, 7, 12, None, None]
    chunks = [e[1] for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-abc" for c in chunks)  # type: ignore[index]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)  # type: ignore[index]
    assert text == "lo, world" and chunks[-1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert events[-1][1] == "[DONE]"


def test_a_reply_that_ended_incomplete_resumes_into_an_error_event_then_done() -> None:
    encoder = OpenAiResumeEncoder("msg_abc", "m", 0)
    events = _events(encoder.encode(ReplyProgress("partial", 7, "incomplete")))
    assert events[-2][1]["error"]["code"] == "upstream_error" and events[-1][1] == "[DONE]"  # type: ignore[index]
