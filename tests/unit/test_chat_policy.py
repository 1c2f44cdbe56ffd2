"""Chat request policy: one output cap under both spellings, n, the deployment's limits, hostile JSON, cursors."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigstream.core.errors import BadRequestError, PolicyViolationError, SigstreamError
from sigstream.core.settings import DEFAULT_FORWARDED_PARAMETERS, ConfigError, StreamSettings, parse_sw1_apps
from sigstream.core.signed_url import Grant
from stream_app.chat.cursors import (
    conversations_cursor,
    messages_cursor,
    parse_conversations_cursor,
    parse_messages_cursor,
)
from stream_app.chat.policy import ChatPolicy
from stream_app.chat.request import ChatRequest, check_new_messages, parse_chat_request, police_unsigned_body

POLICY = ChatPolicy("gpt-4o-mini", allowed_models=("local-echo-1",), max_output_tokens=1000)
GRANT = Grant("POST", "/v1/chat/completions", "u", 0, 1)
HI = [{"role": "user", "content": "hi"}]


def request(doc: dict[str, Any], grant: Grant = GRANT, policy: ChatPolicy = POLICY) -> ChatRequest:
    return parse_chat_request(json.dumps(doc).encode(), "application/json", grant, policy)


def error_of(doc: dict[str, Any] | bytes, grant: Grant = GRANT, policy: ChatPolicy = POLICY) -> SigstreamError:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(SigstreamError) as info:
        parse_chat_request(body, "application/json", grant, policy)
    assert 400 <= info.value.status < 500
    return info.value


@pytest.mark.parametrize(
    "limits,status,param",
    [
        ({"max_completion_tokens": None, "max_tokens": 9_999_999}, 403, "max_tokens"),
        ({"max_tokens": "10"}, 400, "max_tokens"),
        ({"max_completion_tokens": "10"}, 400, "max_completion_tokens"),
        ({"max_tokens": 10.0}, 400, "max_tokens"),
        ({"max_tokens": 1001}, 403, "max_tokens"),
        ({"max_completion_tokens": 1001}, 403, "max_completion_tokens"),
        ({"n": 16}, 403, "n"),
        ({"n": 2}, 403, "n"),
        ({"n": "2"}, 400, "n"),
    ],
)
def test_the_output_cap_cannot_be_dodged(limits: dict[str, Any], status: int, param: str) -> None:
    error = error_of({"messages": HI, **limits})
    assert (error.status, error.param) == (status, param)


def test_both_spellings_are_one_cap_the_smaller_wins_and_both_are_forwarded() -> None:
    both = request({"messages": HI, "max_tokens": 10, "max_completion_tokens": 9_999_999})
    assert both.params["max_tokens"] == both.params["max_completion_tokens"] == 10
    assert both.max_output_tokens == 10
    one = request({"messages": HI, "max_completion_tokens": 20, "max_tokens": None})
    assert one.params["max_completion_tokens"] == 20 and "max_tokens" not in one.params
    default = request({"messages": HI})
    assert default.params["max_tokens"] == 1000 and "max_completion_tokens" not in default.params
    reasoning = ChatPolicy("o4-mini", output_tokens_parameter="max_completion_tokens", max_output_tokens=50)
    assert request({"messages": HI}, policy=reasoning).params == {"model": "o4-mini", "max_completion_tokens": 50}


def test_the_signed_url_narrows_the_deployment_never_widens_it() -> None:
    signed = Grant("POST", "/v1/chat/completions", "u", 0, 1, models=("local-echo-1", "gpt-4o"), max_tokens=5000, n=3)
    assert request({"messages": HI, "n": 3}, signed).choices == 3
    assert request({"messages": HI}, signed).params["model"] == "local-echo-1"  # the URL's first model
    error = error_of({"messages": HI, "model": "gpt-4o"}, signed)  # signed, but not allowed by the deployment
    assert (error.status, error.param) == (403, "model")
    assert request({"messages": HI, "n": 3}, signed).max_output_tokens == 1000  # the deployment's cap is smaller
    assert request({"messages": HI, "n": 2, "max_tokens": 7}, signed).output_tokens == 14
    assert (error_of({"messages": HI, "n": 4}, signed).param, error_of({"messages": HI, "model": "x"}).status) == (
        "n",
        403,
    )


@pytest.mark.parametrize(
    "name", ["service_tier", "store", "metadata", "modalities", "audio", "functions", "Model", "user", "max_tokens "]
)
def test_parameters_outside_the_allow_list_are_400s_naming_them(name: str) -> None:
    error = error_of({"messages": HI, name: True})
    assert (error.status, error.param) == (400, name)


def test_an_operator_can_forward_more_parameters() -> None:
    policy = ChatPolicy("m", forwarded_parameters=("service_tier",))
    assert request({"messages": HI, "service_tier": "flex"}, policy=policy).params["service_tier"] == "flex"
    assert error_of({"messages": HI, "temperature": 1}, policy=policy).param == "temperature"


def test_input_size_limits() -> None:
    small = ChatPolicy("m", max_input_chars=10, max_input_tokens=50, max_request_messages=2)
    assert error_of({"messages": [{"role": "user", "content": "x" * 11}]}, policy=small).param == "messages"
    assert error_of({"messages": HI * 3}, policy=small).param == "messages"
    image = {"type": "image_url", "image_url": {"url": "https://e/x.png"}}
    assert error_of({"messages": [{"role": "user", "content": [image]}]}, policy=small).param == "messages"
    tools = [{"type": "function", "function": {"name": "f", "description": "d" * 400}}]
    assert error_of({"messages": HI, "tools": tools}, policy=small).param == "messages"
    assert request({"messages": HI}, policy=small).input_tokens == 1 + 4 + 1  # text, message overhead, "{}"
    assert request({"messages": HI}, policy=small).input_bound == 2 + 4 + 2  # bytes, message overhead, "{}"


def test_the_reservation_bound_counts_bytes_of_messages_and_parameters() -> None:
    astral = "".join(chr(0x20000 + i) for i in range(1000))
    tools = [{"type": "function", "function": {"name": "f", "description": astral}}]
    chat = request({"messages": [{"role": "user", "content": astral}], "tools": tools})
    assert chat.input_tokens < 4000 < 8000 <= chat.input_bound  # 4,000 bytes of message, 4,000 of tools


@pytest.mark.parametrize(
    "body",
    [
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": Infinity}',
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}',
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"messages": [{"role": "user", "content": "x", "\\udfff": 1}]}',
        b'{"messages": [{"role": "user", "content": "x"}], "seed": ' + b"9" * 5000 + b"}",
    ],
)
def test_nan_infinity_and_lone_surrogates_are_400s(body: bytes) -> None:
    error = error_of(body)
    assert error.status == 400 and error.param in ("body", "messages[0].\\udfff", "messages[0].'\\udfff'")


def test_paired_surrogate_escapes_are_fine() -> None:
    body = b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    assert parse_chat_request(body, "application/json", GRANT, POLICY).messages[0].content == "\U0001f600"


def test_stored_messages_must_fit_one_item_when_there_is_a_conversation() -> None:
    big = {"messages": [{"role": "user", "content": "x" * 360_000}]}
    roomy = ChatPolicy("m", max_input_chars=10**6, max_input_tokens=10**6)
    assert request(big, policy=roomy).messages
    stateful = Grant("POST", "/v1/chat/completions", "u", 0, 1, conversation_id="conv_abcdefgh")
    chat = request(big, stateful, roomy)  # checked once the new messages are known: a resend's stored ones pass
    with pytest.raises(BadRequestError) as raised:
        check_new_messages(chat, chat.messages, roomy)
    assert raised.value.param == "messages[0]"
    resent = request({"messages": [big["messages"][0], {"role": "user", "content": "more"}]}, stateful, roomy)
    assert check_new_messages(resent, resent.messages[1:], roomy).messages == resent.messages[1:]


def test_sw1_unsigned_body_policy() -> None:
    body = json.dumps({"model": "m1", "messages": HI}).encode()
    capped = json.loads(police_unsigned_body(body, "application/json", ("m1",), 100))
    assert capped["max_tokens"] == 100
    same = json.dumps({"model": "m1", "max_tokens": 50}).encode()
    assert police_unsigned_body(same, "", ("m1",), 100) == same
    # Duplicate keys: what is forwarded is what was checked, whichever duplicate a provider's parser keeps.
    twice = b'{"model": "pricey", "model": "m1", "max_tokens": 999999, "max_tokens": 5}'
    assert json.loads(police_unsigned_body(twice, "", ("m1",), 100)) == {"model": "m1", "max_tokens": 5}
    assert b"pricey" not in police_unsigned_body(twice, "", ("m1",), 100)
    both = json.loads(
        police_unsigned_body(json.dumps({"max_tokens": 5, "max_completion_tokens": 900}).encode(), "", (), 100)
    )
    assert both["max_tokens"] == both["max_completion_tokens"] == 5
    for doc, param in (
        ({"model": "m2"}, "model"),
        ({"model": "m1", "max_tokens": None, "max_completion_tokens": 101}, "max_completion_tokens"),
        ({"model": "m1", "n": 2}, "n"),
        ({"model": "m1", "max_tokens": "5"}, "max_tokens"),
    ):
        with pytest.raises(SigstreamError) as info:
            police_unsigned_body(json.dumps(doc).encode(), "", ("m1",), 100)
        assert info.value.param == param and info.value.status in (400, 403)


def test_unsigned_sw1_bodies_send_only_the_apps_parameters() -> None:
    body = json.dumps({"model": "m1", "messages": HI, "prediction": {"type": "content", "content": "x"}}).encode()
    with pytest.raises(BadRequestError) as info:
        police_unsigned_body(body, "", ("m1",), 100, ("temperature",))
    assert info.value.param == "prediction"
    assert json.loads(police_unsigned_body(body, "", ("m1",), 100, ("prediction",)))["prediction"]
    assert json.loads(police_unsigned_body(body, "", ("m1",), 100, ("*",)))["prediction"]
    apps = parse_sw1_apps(json.dumps({"apps": [{"id": "a", "secret": "s", "proxy": "https://p/x", "models": ["m1"]}]}))
    assert apps["a"].parameters == DEFAULT_FORWARDED_PARAMETERS
    with pytest.raises(ConfigError):
        parse_sw1_apps(json.dumps({"apps": [{"id": "a", "secret": "s", "proxy": "https://p/x", "parameters": "x"}]}))


def test_settings_policy_defaults_are_safe_and_validated() -> None:
    env = {
        f"SIGSTREAM_{k}": v for k, v in {"TABLE": "t", "SIGNING_KEYS_SECRET": "s", "PROVIDER_KEY_SECRET": "p"}.items()
    }
    env["SIGSTREAM_UPSTREAM_BASE_URL"] = "http://x"
    settings_ = StreamSettings.from_env(env)
    policy = ChatPolicy.from_settings(settings_)
    assert policy.allows_model("gpt-4o-mini") and not policy.allows_model("gpt-4o")
    assert settings_.daily_token_budget > 0 and settings_.max_output_tokens == 1024
    assert not policy.allows_parameter("service_tier") and policy.allows_parameter("tools")
    for name, value in (
        ("MAX_REQUEST_MESSAGES", "99"),
        ("ALLOWED_MODELS", "gpt 4"),
        ("FORWARDED_PARAMETERS", "Bad-Name"),
        ("OUTPUT_TOKENS_PARAMETER", "max"),
        ("MAX_OUTPUT_TOKENS", "0"),
    ):
        with pytest.raises(ConfigError):
            StreamSettings.from_env({**env, f"SIGSTREAM_{name}": value})


def test_cursors_round_trip_and_old_cursors_still_read() -> None:
    assert (
        parse_conversations_cursor(conversations_cursor("001700000000#conv_abcdefgh")) == "001700000000#conv_abcdefgh"
    )
    assert parse_messages_cursor(messages_cursor(12)) == 12
    old = {"pk": {"S": "CONV#conv_abcdefgh"}, "sk": {"S": "MSG#00000012"}}
    assert parse_messages_cursor(base64.urlsafe_b64encode(json.dumps(old).encode()).decode()) == 12
    old_listing = {"gsi1pk": {"S": "SUB#victim"}, "gsi1sk": {"S": "001700000000#conv_abcdefgh"}, "pk": {"S": "x"}}
    assert parse_conversations_cursor(base64.urlsafe_b64encode(json.dumps(old_listing).encode()).decode()) == (
        "001700000000#conv_abcdefgh"
    )


@pytest.mark.parametrize(
    "cursor",
    ["", "%%%", "bm90IGpzb24", "e30", "²", "x" * 600, conversations_cursor("1#conv_x"), messages_cursor(10**9)],
)
def test_malformed_cursors_are_400s_naming_after(cursor: str) -> None:
    for parse in (parse_conversations_cursor, parse_messages_cursor):
        with pytest.raises(BadRequestError) as info:
            parse(cursor)
        assert info.value.param == "after"


@settings(max_examples=400)
@given(st.text(max_size=80) | st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode()))
def test_any_cursor_is_a_position_or_a_400(cursor: str) -> None:
    try:
        position = parse_conversations_cursor(cursor)
        assert position[:12].isdigit() and position[12] == "#" and "#" not in position[13:]
    except BadRequestError as error:
        assert error.param == "after"
    try:
        assert 0 <= parse_messages_cursor(cursor) < 10**8
    except BadRequestError as error:
        assert error.param == "after"


def test_policy_violation_is_a_403() -> None:
    assert PolicyViolationError("x").status == 403


AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
FILE_BY_ID = {"type": "file", "file": {"file_id": "file-someone-elses"}}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


@pytest.mark.parametrize("part", [AUDIO, FILE_BY_ID], ids=["audio", "file_id"])
def test_audio_and_file_parts_are_refused_unless_the_deployment_allows_them(part: dict[str, Any]) -> None:
    doc = {"messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, part]}]}
    error = error_of(doc)
    assert error.status == 400 and error.param == "messages[0].content[1].type"
    assert part["type"] in error.message
    opted_in = ChatPolicy("gpt-4o-mini", content_parts=("text", "image_url", "input_audio", "file"))
    assert request(doc, policy=opted_in).messages[0].content is not None


def test_images_and_text_parts_pass_by_default() -> None:
    doc = {"messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, IMAGE]}]}
    assert len(request(doc).messages) == 1


def test_the_content_parts_setting_is_checked() -> None:
    base = {
        "SIGSTREAM_TABLE": "t",
        "SIGSTREAM_SIGNING_KEYS_SECRET": "s",
        "SIGSTREAM_PROVIDER_KEY_SECRET": "p",
        "SIGSTREAM_UPSTREAM_BASE_URL": "https://api.example.com/v1",
    }
    assert StreamSettings.from_env(base).content_parts == ("text", "image_url")
    assert StreamSettings.from_env({**base, "SIGSTREAM_CONTENT_PARTS": "text,file"}).content_parts == ("text", "file")
    for bad in ("image_url", "text,video"):
        with pytest.raises(ConfigError):
            StreamSettings.from_env({**base, "SIGSTREAM_CONTENT_PARTS": bad})
