"""The relay loop on the 12 recorded OpenAI streams: bytes out as they came in, the same record as a full parse."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app import chat_turn
from stream_app.chat import fast_json
from stream_app.chat.reply import Reply
from stream_app.chat.request import ChatRequest
from stream_app.chat.sse import DONE
from tests.conftest import RECORDED

FIXTURES = RECORDED / "openai-sse"
INDEX = json.loads((FIXTURES / "index.json").read_text())
STREAMS = {e["file"]: (FIXTURES / e["file"]).read_bytes() for e in INDEX}


class _Response:
    def close(self) -> None:
        pass


def _relay(reads: list[bytes], usage_requested: bool = True) -> tuple[bytes, Reply, bool]:
    deps: Any = SimpleNamespace(settings=SimpleNamespace(coalesce_ms=0), clock=time.time)
    chat = ChatRequest(
        params={},
        messages=(),
        stream=True,
        usage_requested=usage_requested,
        max_output_tokens=1024,
        choices=1,
        input_tokens=0,
        input_bound=0,
    )
    budget: Any = SimpleNamespace(input_tokens=0, settle=lambda tokens: None)
    grant: Any = SimpleNamespace(subject="s", conversation_id=None)
    turn = chat_turn._Turn(deps, grant, chat_turn._Plan(chat, []), "key", budget, None)
    turn.response = _Response()  # type: ignore[assignment]
    chunks: Iterator[bytes] = iter(reads)
    first = turn.first_events(chunks)
    out = b"".join(turn._relay(first, chunks))
    return out, turn.reply, turn.saw_done


def _reference(stream: bytes) -> Reply:
    """What the record must hold: every event parsed in full with json.loads."""
    reply = Reply()
    for event in stream.split(b"\n\n"):
        data = event.removeprefix(b"data: ").strip()
        if data and data != b"[DONE]":
            reply.add_chunk(json.loads(data))
    return reply


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points) if b > a]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_each_recorded_stream_is_relayed_byte_for_byte_one_event_per_read(name: str) -> None:
    stream = STREAMS[name]
    events = [e + b"\n\n" for e in stream.split(b"\n\n") if e.strip()]
    out, reply, saw_done = _relay(events)
    assert saw_done
    assert out == stream.removesuffix(DONE)  # [DONE] is sent by the caller once the turn is stored
    entry = next(e for e in INDEX if e["file"] == name)
    assert reply.content == entry["choice0_text"] and reply.usage == entry["usage"]
    assert reply.message() == _reference(stream).message()
    assert bool(reply.tool_calls) == entry["has_tool_calls"]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(STREAMS)), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_into_reads_gives_the_same_bytes_and_record(name: str, cuts: list[int]) -> None:
    stream = STREAMS[name]
    out, reply, _ = _relay(_split(stream, cuts))
    assert out == stream.removesuffix(DONE)
    reference = _reference(stream)
    assert (reply.message(), reply.usage, reply.finish_reason, reply.model) == (
        reference.message(),
        reference.usage,
        reference.finish_reason,
        reference.model,
    )


def test_usage_the_client_did_not_ask_for_is_recorded_but_not_forwarded() -> None:
    stream = STREAMS["173417d55340.sse"]
    out, reply, _ = _relay([stream], usage_requested=False)
    assert reply.usage is not None and b'"usage":{' not in out
    assert out.count(b"\n\n") == stream.count(b"\n\n") - 2  # the usage event and [DONE]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=_json_values, separators=st.sampled_from([(",", ":"), (", ", ": ")]), pad=st.sampled_from(["", " ", "\n"]))
def test_fast_json_reads_documents_exactly_as_json_loads(value: Any, separators: tuple[str, str], pad: str) -> None:
    text = pad + json.dumps(value, separators=separators) + pad
    assert fast_json.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a":1} x', "[1,]", "nul", '"\\x"', " "])
def test_fast_json_rejects_what_json_loads_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        fast_json.loads(text)


class _RecordingEncoder:
    """A second wire format, as the useChat route plugs one in: sees each parsed event and the stream's end."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.errors: list[str] = []
        self.ended: list[str] = []

    def event(self, raw: bytes, chunk: dict[str, Any], position: int) -> bytes:
        self.positions.append(position)
        return b"<%d>" % position

    def error(self, code: str, message: str) -> bytes:
        self.errors.append(code)
        return b"<error>"

    def end(self, status: str) -> bytes:
        self.ended.append(status)
        return b"<end>"


def _encoded(reads: list[bytes]) -> tuple[bytes, _RecordingEncoder, Reply]:
    deps: Any = SimpleNamespace(settings=SimpleNamespace(coalesce_ms=0), clock=time.time)
    chat = ChatRequest(
        params={}, messages=(), stream=True, usage_requested=True, max_output_tokens=1024, choices=1,
        input_tokens=0, input_bound=0,
    )  # fmt: skip
    budget: Any = SimpleNamespace(input_tokens=0, settle=lambda tokens: None)
    grant: Any = SimpleNamespace(subject="s", conversation_id=None)
    turn = chat_turn._Turn(deps, grant, chat_turn._Plan(chat, []), "key", budget, None)
    turn.response = _Response()  # type: ignore[assignment]
    encoder = _RecordingEncoder()
    turn.encoder = encoder
    chunks: Iterator[bytes] = iter(reads)
    first = turn.first_events(chunks)
    return b"".join(turn.stream(first, chunks)), encoder, turn.reply


def test_another_encoder_gets_every_event_with_its_reply_position_and_the_end_status() -> None:
    name = next(e["file"] for e in INDEX if not e["has_tool_calls"])
    stream = STREAMS[name]
    events = [e + b"\n\n" for e in stream.split(b"\n\n") if e.strip()]
    out, encoder, reply = _encoded(events)
    assert encoder.ended == ["complete"] and encoder.errors == [] and out.endswith(b"<end>")
    assert encoder.positions == sorted(encoder.positions) and encoder.positions[-1] == len(reply.content)
    assert b"data:" not in out  # nothing of the OpenAI format leaks past the encoder


def test_another_encoder_ends_a_cut_stream_with_its_own_error_and_incomplete() -> None:
    stream = STREAMS[sorted(STREAMS)[0]]
    events = [e + b"\n\n" for e in stream.split(b"\n\n") if e.strip()]
    out, encoder, _ = _encoded(events[:3])  # the provider stopped before [DONE]
    assert encoder.errors == ["upstream_error"] and encoder.ended == ["incomplete"]
    assert out.endswith(b"<error><end>")
