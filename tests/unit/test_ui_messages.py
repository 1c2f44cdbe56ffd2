"""UIMessage[] (what DefaultChatTransport POSTs) to OpenAI chat-completions messages, with 400s naming the field."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigstream.core.errors import BadRequestError, HistoryConflictError
from stream_app.chat.ui_messages import (
    UiLimits,
    name_ui_messages,
    parse_ui_chat_body,
    response_message_id,
    ui_messages_to_openai,
)

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
PDF = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 fake").decode()
WAV = "data:audio/wav;base64," + base64.b64encode(b"RIFF fake").decode()


def user(text: str, message_id: str = "u1", *extra: dict[str, Any]) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}, *extra]}


def openai(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for turn in ui_messages_to_openai(messages) for m in turn.openai]


def bad(messages: Any, **kwargs: Any) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        ui_messages_to_openai(messages, **kwargs)
    assert caught.value.status == 400 and caught.value.message
    return caught.value


def test_text_parts_become_content_and_ui_only_parts_are_dropped() -> None:
    messages = [
        {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]},
        {
            "id": "u1",
            "role": "user",
            "metadata": {"anything": 1},
            "parts": [{"type": "text", "text": "Hi"}, {"type": "data-weather", "data": {"t": 1}}],
        },
        {
            "id": "a1",
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {"type": "reasoning", "text": "hmm", "state": "done"},
                {"type": "text", "text": "Hel", "state": "done"},
                {"type": "source-url", "sourceId": "s", "url": "https://x"},
                {"type": "text", "text": "lo", "state": "done"},
            ],
        },
        user("And?", "u2"),
    ]
    assert openai(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "And?"},
    ]


def test_files_become_provider_content_parts() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "file", "mediaType": "image/png", "url": PNG, "filename": "a.png"},
        {"type": "file", "mediaType": "image/*", "url": "https://example.com/cat.jpg"},
        {"type": "file", "mediaType": "application/pdf", "url": PDF, "filename": "doc.pdf"},
        {"type": "file", "mediaType": "application/pdf", "url": PDF},
        {"type": "file", "mediaType": "audio/mpeg", "url": WAV.replace("audio/wav", "audio/mpeg")},
        {"type": "file", "mediaType": "audio/wav", "url": WAV},
    ]
    [message] = openai([{"id": "u", "role": "user", "parts": parts}])
    assert message["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"filename": "doc.pdf", "file_data": PDF}},
        {"type": "file", "file": {"filename": "part-4.pdf", "file_data": PDF}},
        {"type": "input_audio", "input_audio": {"data": WAV.split(",")[1], "format": "mp3"}},
        {"type": "input_audio", "input_audio": {"data": WAV.split(",")[1], "format": "wav"}},
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        (
            {"type": "file", "mediaType": "text/plain", "url": "data:text/plain;base64,aGk="},
            "messages[0].parts[1].mediaType",
        ),
        ({"type": "file", "mediaType": "image/png", "url": "http://example.com/a.png"}, "messages[0].parts[1].url"),
        ({"type": "file", "mediaType": "image/png", "url": "blob:https://app/123"}, "messages[0].parts[1].url"),
        ({"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,***"}, "messages[0].parts[1].url"),
        ({"type": "file", "mediaType": "application/pdf", "url": "https://x/a.pdf"}, "messages[0].parts[1].url"),
        ({"type": "file", "mediaType": "audio/wav", "url": "data:audio/wav,raw"}, "messages[0].parts[1].url"),
        (
            {"type": "file", "mediaType": "image/png", "url": "", "providerReference": {"openai": "file-abc"}},
            "messages[0].parts[1].providerReference",
        ),
        ({"type": "file", "url": PNG}, "messages[0].parts[1].mediaType"),
        ({"type": "file", "mediaType": "image/png", "url": PNG, "filename": 3}, "messages[0].parts[1].filename"),
        ({"type": "text", "text": None}, "messages[0].parts[1].text"),
        ({"type": "reasoning", "text": "x"}, "messages[0].parts[1].type"),
        ({"type": "tool-x", "toolCallId": "c", "state": "output-available"}, "messages[0].parts[1].type"),
        ({"type": "nonsense"}, "messages[0].parts[1].type"),
        ({"text": "no type"}, "messages[0].parts[1].type"),
        ("just a string", "messages[0].parts[1].type"),
    ],
)
def test_bad_user_parts_are_400s_naming_the_field(part: Any, param: str) -> None:
    error = bad([user("hi", "u", part)])
    assert error.param == param and param in error.message
    assert error.body()["error"]["param"] == param


def test_tool_round_trip_becomes_assistant_tool_calls_then_tool_messages_per_step() -> None:
    assistant = {
        "id": "a1",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool-get_weather",
                "toolCallId": "call_1",
                "state": "output-available",
                "input": {"city": "Paris"},
                "output": {"temp": 21},
            },
            {
                "type": "dynamic-tool",
                "toolName": "clock",
                "toolCallId": "call_2",
                "state": "output-available",
                "input": {},
                "output": "12:00",
            },
            {"type": "step-start"},
            {
                "type": "tool-lookup",
                "toolCallId": "call_3",
                "state": "output-error",
                "input": '{"q":"x"}',
                "errorText": "not found",
            },
            {
                "type": "tool-delete",
                "toolCallId": "call_4",
                "state": "output-denied",
                "input": [1],
                "approval": {"id": "ap", "approved": False, "reason": "no"},
            },
            {"type": "tool-typing", "toolCallId": "call_5", "state": "input-streaming", "input": {"a": 1}},
            {"type": "step-start"},
            {"type": "text", "text": "It is 21°C."},
        ],
    }
    assert openai([user("Weather?"), assistant]) == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "clock", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}},
                {"id": "call_4", "type": "function", "function": {"name": "delete", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_3", "content": '{"error":"not found"}'},
        {"role": "tool", "tool_call_id": "call_4", "content": '{"error":"no"}'},
        {"role": "assistant", "content": "It is 21°C."},
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "tool-t", "toolCallId": "c", "state": "input-available", "input": {}}, "messages[1].parts[0].state"),
        ({"type": "tool-t", "toolCallId": "c", "state": "approval-requested"}, "messages[1].parts[0].state"),
        ({"type": "tool-t", "toolCallId": "c", "state": "bogus"}, "messages[1].parts[0].state"),
        ({"type": "tool-t", "toolCallId": "", "state": "output-available"}, "messages[1].parts[0].toolCallId"),
        ({"type": "tool-t", "state": "output-available"}, "messages[1].parts[0].toolCallId"),
        ({"type": "tool-bad name", "toolCallId": "c", "state": "output-available"}, "messages[1].parts[0].type"),
        ({"type": "tool-", "toolCallId": "c", "state": "output-available"}, "messages[1].parts[0].type"),
        ({"type": "dynamic-tool", "toolCallId": "c", "state": "output-available"}, "messages[1].parts[0].toolName"),
        (
            {"type": "tool-t", "toolCallId": "c", "state": "output-available", "providerExecuted": True},
            "messages[1].parts[0].providerExecuted",
        ),
        ({"type": "tool-t", "toolCallId": "c", "state": "output-error"}, "messages[1].parts[0].errorText"),
        ({"type": "image", "url": "x"}, "messages[1].parts[0].type"),
        ({"type": "steering-message", "id": "s", "parts": "x"}, "messages[1].parts[0].parts"),
        ({"type": "steering-message", "id": "s", "parts": [{"type": "tool-x"}]}, "messages[1].parts[0].parts[0].type"),
    ],
)
def test_bad_assistant_parts_are_400s_naming_the_field(part: dict[str, Any], param: str) -> None:
    assert bad([user("q"), {"id": "a", "role": "assistant", "parts": [part]}]).param == param


def test_steering_messages_become_user_messages_between_steps() -> None:
    parts = [
        {"type": "text", "text": "Working"},
        {"type": "steering-message", "id": "s1", "parts": [{"type": "text", "text": "faster"}]},
        {"type": "text", "text": "Done"},
    ]
    assert openai([user("go"), {"id": "a", "role": "assistant", "parts": parts}])[1:] == [
        {"role": "assistant", "content": "Working"},
        {"role": "user", "content": "faster"},
        {"role": "assistant", "content": "Done"},
    ]


def test_an_assistant_message_with_nothing_for_the_model_is_an_empty_turn() -> None:
    turns = ui_messages_to_openai([user("q"), {"id": "a", "role": "assistant", "parts": [{"type": "step-start"}]}])
    assert [(t.id, t.role, t.openai) for t in turns][1] == ("a", "assistant", ())


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (None, "messages"),
        ([], "messages"),
        ({"role": "user"}, "messages"),
        (["x"], "messages[0]"),
        ([{"role": "user", "parts": []}], "messages[0].id"),
        ([{"id": 1, "role": "user", "parts": []}], "messages[0].id"),
        ([{"id": "x" * 257, "role": "user", "parts": []}], "messages[0].id"),
        ([{"id": "t", "role": "tool", "parts": []}], "messages[0].role"),
        ([{"id": "t", "role": "user"}], "messages[0].parts"),
        ([{"id": "t", "role": "user", "parts": []}], "messages[0].parts"),
        ([{"id": "t", "role": "user", "parts": [{"type": "data-x", "data": 1}]}], "messages[0].parts"),
        ([{"id": "t", "role": "system", "parts": [{"type": "file", "url": "x"}]}], "messages[0].parts[0].type"),
    ],
)
def test_bad_messages_are_400s_naming_the_field(messages: Any, param: str) -> None:
    assert bad(messages).param == param


def test_size_limits() -> None:
    limits = UiLimits(max_messages=3, max_parts=2, max_id_chars=8)
    assert bad([user("a")] * 4, limits=limits).param == "messages"
    assert bad([user("a", "u", {"type": "text", "text": "b"}, {"type": "text", "text": "c"})], limits=limits).param == (
        "messages[0].parts"
    )
    assert bad([user("a", "123456789")], limits=limits).param == "messages[0].id"
    tool = {"type": "tool-t", "toolCallId": "c" * 9, "state": "output-available"}
    assert bad([user("q"), {"id": "a", "role": "assistant", "parts": [tool]}], limits=limits).param == (
        "messages[1].parts[0].toolCallId"
    )


def test_the_transport_body_keeps_trigger_ids_and_other_keys_as_params() -> None:
    doc = {
        "id": "chat-1",
        "messages": [user("hi")],
        "trigger": "regenerate-message",
        "messageId": "a1",
        "model": "gpt-4o-mini",
        "temperature": 0.2,
    }
    body = parse_ui_chat_body(doc)
    assert (body.chat_id, body.trigger, body.message_id) == ("chat-1", "regenerate-message", "a1")
    assert body.params == {"model": "gpt-4o-mini", "temperature": 0.2}
    assert body.openai_messages() == [{"role": "user", "content": "hi"}]
    assert response_message_id(body, "new-id") == "new-id"
    minimal = parse_ui_chat_body({"messages": [user("hi")]})
    assert (minimal.chat_id, minimal.trigger, minimal.message_id) == (None, "submit-message", None)


def test_a_continuation_after_client_tool_results_answers_into_the_same_assistant_message() -> None:
    tool = {"type": "tool-t", "toolCallId": "c", "state": "output-available", "input": {}, "output": 1}
    body = parse_ui_chat_body({"id": "x", "messages": [user("q"), {"id": "a-1", "role": "assistant", "parts": [tool]}]})
    assert response_message_id(body, "new-id") == "a-1"


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        ({"messages": [user("a")], "trigger": "resume-stream"}, "trigger"),
        ({"messages": [user("a")], "id": 5}, "id"),
        ({"messages": [user("a")], "messageId": ["x"]}, "messageId"),
        ({"messages": "hi"}, "messages"),
    ],
)
def test_bad_bodies(doc: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_ui_chat_body(doc)
    assert caught.value.param == param


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)
part_strategy = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["text", "file", "step-start", "reasoning", "tool-t", "dynamic-tool", "data-x", "steering-message", "bad"]
        )
    },
    optional={
        "text": json_values,
        "state": st.sampled_from(["input-streaming", "input-available", "output-available", "output-error", "x"]),
        "toolCallId": json_values,
        "toolName": json_values,
        "input": json_values,
        "output": json_values,
        "errorText": json_values,
        "mediaType": st.sampled_from(["image/png", "application/pdf", "audio/wav", "text/plain"]),
        "url": st.sampled_from([PNG, PDF, WAV, "https://x/y", "data:,", ""]),
        "parts": json_values,
    },
)
message_strategy = st.fixed_dictionaries(
    {"id": st.text(max_size=4), "role": st.sampled_from(["user", "assistant", "system", "tool"])},
    optional={"parts": st.lists(part_strategy | json_values, max_size=4)},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message_strategy | json_values, max_size=4))
def test_any_input_is_converted_or_refused_with_a_400(messages: Any) -> None:
    try:
        turns = ui_messages_to_openai(messages)
    except BadRequestError as error:
        assert error.param and error.param.startswith("messages")
        return
    for turn in turns:
        for message in turn.openai:
            assert message["role"] in {"system", "user", "assistant", "tool"}
            if message["role"] == "tool":
                assert isinstance(message["content"], str) and isinstance(message["tool_call_id"], str)


def test_errors_about_chat_completions_messages_name_the_ui_message_instead() -> None:
    owners = [0, 1, 1, 1, 2]  # UI message 1 became assistant + tool + assistant
    error = HistoryConflictError("messages[3] does not match stored message 3", param="messages[3].content")
    name_ui_messages(error, owners)
    assert (error.param, error.message) == ("messages[1].parts", "messages[1] does not match stored message 3")
    assert str(error) == error.message
    for param in ("messages", "messages[9].role", "model", None):  # nothing to rename, or no such message
        untouched = BadRequestError("x", param=param)
        name_ui_messages(untouched, owners)
        assert untouched.param == param
