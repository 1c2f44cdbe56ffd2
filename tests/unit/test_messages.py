"""The message parser: only OpenAI's fields, type-checked; nothing a client sends can name a storage attribute."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigstream.core.errors import BadRequestError, SigstreamError
from stream_app.adapters.dynamo_values import from_item
from stream_app.adapters.history_store import HistoryStore, StoredMessage
from stream_app.chat.messages import (
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    assistant_reply,
    message_from_stored,
    parse_message,
)

# Every attribute name the table design uses, and the metadata the server records about a message.
SERVER_OWNED = {"pk", "sk", "gsi1pk", "gsi1sk", "subject", "expires_at", "id", "created_at", "message_count"}
SERVER_OWNED |= {"status", "usage", "model", "latency_ms", "finish_reason", "title", "tokens", "tokens_in"}


def parsed(doc: dict[str, Any]) -> Message:
    return parse_message(doc, "messages[0]")


def refused(doc: Any) -> BadRequestError:
    with pytest.raises(BadRequestError) as info:
        parse_message(doc, "messages[0]")
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("field", sorted(SERVER_OWNED | {"GSI1PK", "Pk", "metadata", "extra"}))
def test_any_field_outside_the_allow_list_is_a_400_naming_it(field: str) -> None:
    error = refused({"role": "user", "content": "hi", field: "CONV#victim"})
    assert error.param == f"messages[0].{field}" and field in error.message


@pytest.mark.parametrize(
    "doc,param",
    [
        ({"role": "user", "content": [{"type": "text", "text": "a", "pk": "x"}]}, "messages[0].content[0].pk"),
        ({"role": "user", "content": [{"type": "text", "text": 5}]}, "messages[0].content[0].text"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}, "messages[0].content[0].image_url"),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "max"}}]},
            "messages[0].content[0].image_url.detail",
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "sk": "MSG#1"}}]},
            "messages[0].content[0].image_url.sk",
        ),
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}]},
            "messages[0].content[0].input_audio.format",
        ),
        ({"role": "user", "content": [{"type": "file", "file": {}}]}, "messages[0].content[0].file"),
        ({"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}, "messages[0].content[0].type"),
        (
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
            "messages[0].content[0].type",
        ),
        ({"role": "user", "content": []}, "messages[0].content"),
        ({"role": "user", "content": "x", "tool_calls": []}, "messages[0].tool_calls"),
        ({"role": "user", "content": "x", "tool_call_id": "call_1"}, "messages[0].tool_call_id"),
        ({"role": "user", "content": "x", "refusal": "no"}, "messages[0].refusal"),
        ({"role": "user", "content": "x", "annotations": []}, "messages[0].annotations"),
        ({"role": "assistant", "content": "x", "audio": {"id": "a"}}, "messages[0].audio"),
        ({"role": "assistant", "content": None}, "messages[0].content"),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "function": {}}]},
            "messages[0].tool_calls[0].type",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "c 1", "function": {"name": "f", "arguments": "{}"}}]},
            "messages[0].tool_calls[0].id",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "", "pk": 1}}]},
            "messages[0].tool_calls[0].function.pk",
        ),
        ({"role": "tool", "content": "x", "tool_call_id": "a\nb"}, "messages[0].tool_call_id"),
        ({"role": "user", "content": "x", "name": "has space"}, "messages[0].name"),
        ({"role": "function", "content": "x", "name": "f"}, "messages[0].role"),
    ],
)
def test_sub_fields_are_type_checked_and_allow_listed(doc: dict[str, Any], param: str) -> None:
    assert refused(doc).param == param


def test_the_openai_shapes_parse_and_round_trip() -> None:
    docs = [
        {"role": "system", "content": "be brief", "name": "policy"},
        {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-abc", "filename": "a.pdf"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}], "refusal": "no"},
    ]
    for doc in docs:
        message = parsed(doc)
        assert message.to_openai() == doc
        assert parsed(message.to_openai()) == message


def test_resent_sdk_messages_are_accepted_without_their_response_only_fields() -> None:
    # What `messages.append(completion.choices[0].message)` sends back with the openai SDK.
    echoed = {
        "role": "assistant",
        "content": "hi",
        "refusal": None,
        "annotations": [],
        "audio": None,
        "function_call": None,
    }
    assert parsed(echoed) == Message("assistant", "hi")
    call = {"id": "call_1", "index": 0, "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert parsed({"role": "assistant", "content": None, "tool_calls": [call]}).tool_calls == (
        ToolCall("call_1", "f", "{}"),
    )


def test_normalised_form_compares_what_a_provider_cannot_tell_apart() -> None:
    a = parsed({"role": "user", "content": "hello"})
    b = parsed({"role": "user", "content": [{"type": "text", "text": "hello"}], "name": None})
    assert a != b and a.fingerprint() == b.fingerprint()
    c = parsed(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": '{"b": 1, "a": 2}'}}],
        }
    )
    d = parsed(
        {"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": '{"a":2,"b":1}'}}]}
    )
    assert c.fingerprint() == d.fingerprint()
    assert parsed({"role": "user", "content": "hello!"}).fingerprint() != a.fingerprint()


def test_token_estimates_count_text_and_media() -> None:
    text = Message("user", "x" * 400)
    assert text.estimated_tokens() == 104
    image = Message("user", (TextPart("x" * 400), ImagePart("https://e/a.png", "low")))
    assert image.estimated_tokens() == 204


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(), min_size=1, max_size=4), name=st.none() | st.just("tool_1"))
def test_the_token_bound_is_at_least_the_utf8_bytes_whatever_the_text(texts: list[str], name: str | None) -> None:
    # Byte-level tokenisers make at most one token per byte; the four-characters estimate is no bound at all
    # (6,000 astral characters: 1,504 estimated, 23,776 in o200k_base).
    message = Message("user", tuple(TextPart(t) for t in texts), name=name)
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in [*texts, name or ""])
    assert message.token_bound() >= size >= message.text_chars()
    assert message.token_bound() >= message.estimated_tokens()


def test_an_image_is_bounded_by_the_most_the_default_model_bills_for_one() -> None:
    # gpt-4o-mini bills 2,833 tokens + 5,667 per 512 px tile (8 tiles at most); the estimate says 100 / 1,600.
    low = Message("user", (ImagePart("https://e/a.png", "low"),))
    high = Message("user", (ImagePart("https://e/a.png"),))
    assert low.token_bound() >= 2833 and high.token_bound() >= 2833 + 8 * 5667
    assert (low.estimated_tokens(), high.estimated_tokens()) == (104, 1604)


def test_provider_replies_are_coerced_into_messages_that_re_parse() -> None:
    reply = assistant_reply("", "", [{"id": "", "function": {"name": "bad name\n", "arguments": 5}}])
    assert reply.tool_calls == (ToolCall("call_0", "badname", "5"),) and reply.content is None
    assert parsed(reply.to_openai()) == reply


def stored_attributes(message: Message) -> dict[str, Any]:
    store = HistoryStore(None, "t", 30)  # type: ignore[arg-type]
    item = store._message_item("CONV#mine", 1, StoredMessage(message), now=1000.0, expires=2000)
    return from_item(item)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=16,
)
field_names = st.sampled_from(
    ["role", "content", "name", "tool_calls", "tool_call_id", "refusal", "annotations", "audio", *sorted(SERVER_OWNED)]
)
message_like = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "wizard"])},
    optional={
        "content": json_values | st.text(max_size=20),
        "name": st.text(max_size=8),
        "tool_call_id": st.text(max_size=8),
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.text(max_size=6),
                    "function": st.dictionaries(st.sampled_from(["name", "arguments", "pk"]), json_values),
                }
            ),
            max_size=2,
        ),
        "refusal": json_values,
    },
) | st.dictionaries(field_names, json_values, max_size=6)


@settings(max_examples=500)
@given(json_values | message_like)
def test_arbitrary_json_yields_a_clean_item_or_a_4xx_never_anything_else(value: Any) -> None:
    try:
        message = parse_message(value, "messages[0]")
    except SigstreamError as error:
        assert 400 <= error.status < 500 and error.param and error.param.startswith("messages[0]")
        return
    item = stored_attributes(message)
    # The only key, TTL and id attributes are the server's own values, never anything the client sent.
    assert item["pk"] == "CONV#mine" and item["sk"] == "MSG#00000001" and item["expires_at"] == 2000
    assert item["created_at"] == 1000 and item["id"].startswith("msg_")
    client_side = set(item) - {"pk", "sk", "expires_at", "created_at", "id", "status"}
    assert client_side <= {"role", "content", "name", "tool_calls", "tool_call_id", "refusal"}
    assert item["status"] == "complete"
    assert message_from_stored(item) == message  # what is stored reads back as the same message
    json.dumps(message.to_openai())


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_stored_items_read_back_only_as_valid_messages(doc: dict[str, Any]) -> None:
    message = message_from_stored(doc)
    if message is not None:
        assert message.role in ("system", "developer", "user", "assistant", "tool")
        assert set(message.to_openai()) <= {"role", "content", "name", "tool_calls", "tool_call_id", "refusal"}
