"""UI message stream encoder: OpenAI chunks in, the AI SDK's chunk sequence out (structure checked here, schema in Node)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.chat.ui_stream import (
    UI_STREAM_HEADERS,
    TextStreamEncoder,
    UiStreamEncoder,
    finish_reason,
    stream_format,
)
from tests.usechat import choice0, encode_text, encode_ui, recorded_chunks, recorded_index, ui_events


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return {"object": "chat.completion.chunk", "model": "gpt-test", "choices": choices, **extra}


def check_sequence(events: list[dict[str, Any]]) -> None:
    """What processUIMessageStream requires: a start first, deltas inside their part, one finish last."""
    assert events[0]["type"] == "start"
    assert [e["type"] for e in events].count("finish") == 1 and events[-1]["type"] == "finish"
    open_text: set[str] = set()
    open_reasoning: set[str] = set()
    tools: dict[str, str] = {}
    for event in events[1:-1]:
        kind = event["type"]
        if kind == "text-start":
            assert event["id"] not in open_text
            open_text.add(event["id"])
        elif kind in ("text-delta", "text-end"):
            assert event["id"] in open_text
            if kind == "text-end":
                open_text.discard(event["id"])
        elif kind == "reasoning-start":
            open_reasoning.add(event["id"])
        elif kind in ("reasoning-delta", "reasoning-end"):
            assert event["id"] in open_reasoning
            if kind == "reasoning-end":
                open_reasoning.discard(event["id"])
        elif kind == "tool-input-start":
            tools[event["toolCallId"]] = "streaming"
        elif kind == "tool-input-delta":
            assert tools[event["toolCallId"]] == "streaming"
        elif kind in ("tool-input-available", "tool-input-error"):
            assert tools[event["toolCallId"]] == "streaming"
            tools[event["toolCallId"]] = "done"
    assert not open_text and not open_reasoning


def deltas(events: list[dict[str, Any]], kind: str = "text-delta") -> str:
    return "".join(e["delta"] for e in events if e["type"] == kind)


@pytest.mark.parametrize("entry", recorded_index(), ids=lambda e: e["file"])
def test_each_recorded_openai_stream_becomes_a_well_formed_ui_stream(entry: dict[str, Any]) -> None:
    chunks = recorded_chunks(entry["file"])
    events = ui_events(encode_ui(chunks, conversationId="c-1"))
    check_sequence(events)
    assert events[0] == {"type": "start", "messageId": "msg-1", "messageMetadata": {"conversationId": "c-1"}}
    refusal = choice0(chunks, "refusal")
    assert choice0(chunks, "content") == entry["choice0_text"]
    assert deltas(events) == entry["choice0_text"] + refusal  # choice 1.. of n>1 streams are not the message
    finish = events[-1]
    assert finish["messageMetadata"]["usage"] == entry["usage"]
    tool_events = [e for e in events if e["type"] == "tool-input-available"]
    assert bool(tool_events) == entry["has_tool_calls"]
    if entry["has_tool_calls"]:
        assert finish["finishReason"] == "tool-calls"
        for event in tool_events:
            streamed = "".join(
                e["inputTextDelta"]
                for e in events
                if e["type"] == "tool-input-delta" and e["toolCallId"] == event["toolCallId"]
            )
            assert json.loads(streamed) == event["input"]
    elif refusal:
        assert finish["finishReason"] == "content-filter"


def test_start_once_text_part_ids_stable_and_usage_in_finish_metadata() -> None:
    encoder = UiStreamEncoder("m-9", metadata={"conversationId": "c"})
    out = encoder.start() + encoder.start()
    out += encoder.feed(chunk({"role": "assistant", "content": ""}))
    out += encoder.feed(chunk({"content": "Hel"})) + encoder.feed(chunk({"content": "lo"}))
    out += encoder.feed(chunk(finish="stop")) + encoder.feed(chunk(usage={"total_tokens": 3}))
    out += encoder.finish(metadata={"status": "complete"})
    assert encoder.finish() == b"" and encoder.feed(chunk({"content": "late"})) == b""
    assert [e["type"] for e in ui_events(out)] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    events = ui_events(out)
    assert {e["id"] for e in events if e["type"].startswith("text-")} == {"text-0"}
    assert events[-1] == {
        "type": "finish",
        "finishReason": "stop",
        "messageMetadata": {"usage": {"total_tokens": 3}, "model": "gpt-test", "status": "complete"},
    }
    assert encoder.text == "Hello" and encoder.ended


def test_tool_call_deltas_become_tool_input_parts_and_openai_tool_calls() -> None:
    encoder = UiStreamEncoder("m")
    out = encoder.feed(
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather"}}]})
    )
    out += encoder.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}))
    out += encoder.feed(
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "now", "arguments": ""}}]})
    )
    out += encoder.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}))
    out += encoder.feed(chunk(finish="tool_calls")) + encoder.finish()
    events = ui_events(out)
    check_sequence(events)
    available = [e for e in events if e["type"] == "tool-input-available"]
    assert available == [
        {"type": "tool-input-available", "toolCallId": "call_a", "toolName": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool-input-available", "toolCallId": "call_b", "toolName": "now", "input": {}},
    ]
    assert events[-1]["finishReason"] == "tool-calls"
    assert encoder.tool_calls() == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": ""}},
    ]


def test_bad_tool_arguments_are_a_tool_input_error_and_missing_ids_are_made_up() -> None:
    encoder = UiStreamEncoder("m")
    out = encoder.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "[1,"}}]}))
    out += encoder.feed(chunk({"tool_calls": [{"index": 0, "function": {"name": "lookup"}}]}))
    out += encoder.finish()
    events = ui_events(out)
    check_sequence(events)
    start = next(e for e in events if e["type"] == "tool-input-start")
    assert start["toolCallId"] == "call_0_m" and len(start["toolCallId"]) <= 40
    assert [e["inputTextDelta"] for e in events if e["type"] == "tool-input-delta"] == ["[1,"]
    error = next(e for e in events if e["type"] == "tool-input-error")
    assert error["input"] == "[1," and error["errorText"]


def test_dynamic_tools_flag() -> None:
    encoder = UiStreamEncoder("m", dynamic_tools=True)
    out = encoder.feed(
        chunk(
            {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "t", "arguments": "{}"}}]}, finish="tool_calls"
        )
    )
    tool_parts = [
        e for e in ui_events(out + encoder.finish()) if e["type"] in ("tool-input-start", "tool-input-available")
    ]
    assert len(tool_parts) == 2 and all(e["dynamic"] is True for e in tool_parts)


def test_reasoning_deltas_of_compatible_providers_are_a_reasoning_part_closed_before_text() -> None:
    encoder = UiStreamEncoder("m")
    out = encoder.feed(chunk({"reasoning_content": "think"})) + encoder.feed(chunk({"content": "answer"}))
    events = ui_events(out + encoder.finish())
    check_sequence(events)
    kinds = [e["type"] for e in events]
    assert kinds.index("reasoning-end") < kinds.index("text-start")
    assert deltas(events, "reasoning-delta") == "think" and deltas(events) == "answer"


def test_failure_after_first_byte_is_an_error_chunk_then_finish_and_done() -> None:
    encoder = UiStreamEncoder("m")
    out = encoder.feed(chunk({"content": "partial"})) + encoder.fail("upstream_timeout: the provider stopped answering")
    events = ui_events(out)
    assert [e["type"] for e in events][-4:] == ["text-end", "error", "finish-step", "finish"]
    assert events[-3] == {"type": "error", "errorText": "upstream_timeout: the provider stopped answering"}
    assert events[-1]["finishReason"] == "error"
    assert encoder.fail("again") == b"" and encoder.text == "partial"


def test_an_error_document_inside_the_upstream_stream_fails_the_message() -> None:
    encoder = UiStreamEncoder("m")
    out = encoder.feed(chunk({"content": "a"})) + encoder.feed({"error": {"message": "secret detail", "code": "x"}})
    events = ui_events(out)
    assert events[-3]["type"] == "error" and "secret detail" not in events[-3]["errorText"]


def test_stop_ends_with_abort_and_a_stopped_finish() -> None:
    encoder = UiStreamEncoder("m")
    out = encoder.feed(chunk({"content": "so far"})) + encoder.stop()
    events = ui_events(out)
    check_sequence(events)
    assert {"type": "abort", "reason": "stopped"} in events
    assert events[-1]["finishReason"] == "other" and events[-1]["messageMetadata"]["status"] == "stopped"


def test_resume_replays_the_checkpoint_then_continues_the_same_text_part() -> None:
    encoder, first = UiStreamEncoder.resume("m-7", "Hello, wor", metadata={"resumed": True})
    out = first + encoder.text_delta("ld") + encoder.feed(chunk({"content": "!"})) + encoder.finish()
    events = ui_events(out)
    check_sequence(events)
    assert events[0] == {"type": "start", "messageId": "m-7", "messageMetadata": {"resumed": True}}
    assert [e["delta"] for e in events if e["type"] == "text-delta"] == ["Hello, wor", "ld", "!"]
    assert encoder.text == "Hello, world!"
    empty, head = UiStreamEncoder.resume("m", "")
    assert [e["type"] for e in ui_events(head + empty.finish())] == ["start", "start-step", "finish-step", "finish"]


def test_text_mode_is_choice0_text_only_and_resumable() -> None:
    chunks = recorded_chunks("a491adda08c3.sse")  # two choices interleaved
    assert encode_text(chunks).decode() == choice0(chunks, "content")
    encoder, first = TextStreamEncoder.resume("checkpoint ")
    assert first + encoder.feed(chunk({"content": "más"})) == "checkpoint más".encode()
    assert encoder.text == "checkpoint más"


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        (None, None, "ui"),
        ("*/*", None, "ui"),
        ("text/event-stream", None, "ui"),
        ("text/plain", None, "text"),
        ("text/plain;q=0.9, */*", None, "text"),
        ("text/plain, text/event-stream", None, "ui"),
        (None, "text", "text"),
        ("text/plain", "ui", "ui"),
    ],
)
def test_stream_format_negotiation(accept: str | None, query: str | None, expected: str) -> None:
    assert stream_format(accept, query) == expected


def test_finish_reasons_stay_inside_the_enum_both_sdk_majors_accept() -> None:
    both = {"stop", "length", "content-filter", "tool-calls", "error", "other"}
    for reason in ("stop", "length", "content_filter", "tool_calls", "function_call", None, "weird"):
        assert finish_reason(reason) in both
    assert finish_reason("stop", refused=True) == "content-filter"
    assert UI_STREAM_HEADERS["x-vercel-ai-ui-message-stream"] == "v1"


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
delta_values = st.fixed_dictionaries(
    {},
    optional={
        "content": st.none() | st.text(max_size=6),
        "refusal": st.none() | st.text(max_size=4),
        "reasoning_content": st.none() | st.text(max_size=4),
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": st.integers(0, 2) | json_scalars,
                    "id": json_scalars,
                    "function": st.fixed_dictionaries(
                        {}, optional={"name": json_scalars, "arguments": st.sampled_from(["", "{", '"a"', "}", "1"])}
                    )
                    | json_scalars,
                },
            ),
            max_size=2,
        )
        | json_scalars,
    },
)
chunks_strategy = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "choices": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "index": st.integers(0, 1),
                        "delta": delta_values | json_scalars,
                        "finish_reason": st.none() | st.sampled_from(["stop", "tool_calls", "length"]),
                    },
                ),
                max_size=2,
            ),
            "usage": st.none() | st.fixed_dictionaries({"total_tokens": st.integers(0, 9)}),
            "model": st.none() | st.text(max_size=5),
        },
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks_strategy, st.sampled_from(["finish", "fail", "stop"]))
def test_any_chunk_sequence_gives_a_well_formed_stream(chunks: list[dict[str, Any]], ending: str) -> None:
    encoder = UiStreamEncoder("m")
    out = b"".join(encoder.feed(c) for c in chunks)
    out += encoder.finish() if ending == "finish" else encoder.fail("x") if ending == "fail" else encoder.stop()
    events = ui_events(out)
    check_sequence(events)
    assert deltas(events) == encoder.text


def test_a_tool_call_is_available_only_once_the_reply_completes() -> None:
    def call_then(end: str) -> list[str]:
        encoder = UiStreamEncoder("m")
        call = {"index": 0, "id": "c", "function": {"name": "t", "arguments": '{"a": 1}'}}
        out = encoder.feed(chunk({"tool_calls": [call]}, finish="tool_calls"))
        assert b"tool-input-available" not in out  # the usage chunk and [DONE] may still break off
        done = {"finish": encoder.finish, "stop": encoder.stop, "fail": lambda: encoder.fail("upstream_error: cut")}
        return [e["type"] for e in ui_events(out + done[end]())]

    assert "tool-input-available" in call_then("finish")
    for end in ("stop", "fail"):  # stored without tool calls: nothing the page could run or answer
        kinds = call_then(end)
        assert "tool-input-start" in kinds and not {"tool-input-available", "tool-input-error"} & set(kinds)
