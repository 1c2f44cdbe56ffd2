"""Property tests: the event parsers and request validation raise nothing but our own errors."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from local.url_event import HttpRequest, build_event
from sigstream.core.errors import SigstreamError
from sigstream.core.signed_url import Grant
from stream_app.chat.policy import ChatPolicy
from stream_app.chat.request import parse_chat_request
from stream_app.http_io import parse_event

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
headers = st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=6)


@given(
    st.sampled_from(["GET", "POST", "DELETE", "PATCH"]),
    st.text(max_size=60),
    st.text(max_size=80),
    headers,
    st.binary(max_size=200),
)
def test_function_url_event_building_never_fails(method, path, query, hdrs, body) -> None:
    event = build_event(
        HttpRequest(method, "/" + path, query, hdrs, body, "127.0.0.1"),
        url_id="u",
        region="us-east-1",
        request_id="r",
        now=0.0,
        iam=None,
    )
    json.dumps(event)  # always serialisable
    if event.get("isBase64Encoded"):
        assert base64.b64decode(event["body"]) == body


@given(json_values)
def test_event_parser_raises_only_our_errors_on_any_json(event) -> None:
    try:
        parse_event(event, max_body=1024)
    except SigstreamError:
        pass


@given(
    st.fixed_dictionaries(
        {"version": st.just("2.0")},
        optional={
            "rawPath": st.text(max_size=30),
            "rawQueryString": st.text(max_size=30),
            "body": st.text(max_size=100) | st.integers(),
            "isBase64Encoded": st.booleans(),
            "headers": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
            "requestContext": st.fixed_dictionaries(
                {}, optional={"http": st.dictionaries(st.text(max_size=8), st.text(max_size=8))}
            ),
        },
    )
)
def test_event_parser_raises_only_our_errors_on_event_shaped_input(event) -> None:
    try:
        request = parse_event(event, max_body=64)
        assert len(request.body) <= 64
    except SigstreamError:
        pass


GRANT = Grant("POST", "/v1/chat/completions", "u", 0, 1, models=("m",), max_tokens=5)


@settings(max_examples=300)
@given(
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(
        st.sampled_from(["messages", "model", "stream", "max_tokens", "stream_options", "n", "temperature", "tools"]),
        json_values,
    ).map(lambda d: json.dumps(d).encode())
)
def test_chat_request_validation_raises_only_our_errors(body) -> None:
    try:
        request = parse_chat_request(body, "application/json", GRANT, ChatPolicy("m"))
        assert request.params["model"] == "m" and request.max_output_tokens <= 5
        assert all(
            request.params[n] == request.max_output_tokens
            for n in ("max_tokens", "max_completion_tokens")
            if n in request.params
        )
    except SigstreamError:
        pass
