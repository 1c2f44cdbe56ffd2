"""Property: no input makes the Stream app answer 5xx (the app in-process on the real moto server and upstream)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.stack import LocalStack
from local.url_event import HttpRequest, build_event
from sigstream.core.settings import parse_signing_keys
from sigstream.core.url_issuer import SignSpec, issue_url, random_id
from tests.helpers import new_subject, upstream_control

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
PARAMETERS = [
    "model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "temperature", "top_p", "stop",
    "tools", "tool_choice", "seed", "logprobs", "top_logprobs", "response_format", "user", "service_tier", "pk",
]  # fmt: skip
FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "refusal", "annotations", "pk", "sk"]
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "system", "developer", "x"])},
        optional={k: json_values for k in FIELDS[1:]},
    ),
    min_size=1,
    max_size=3,
)
bodies = (
    st.fixed_dictionaries(
        {"messages": messages}, optional={k: json_values for k in PARAMETERS} | {"stream": st.booleans()}
    ).map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=80)
    | st.sampled_from([b'{"messages": [{"role": "user", "content": "\\ud800"}], "top_p": NaN}', b"[" * 100])
)


@pytest.fixture(scope="module")
def app(app_stack: LocalStack) -> Iterator[Any]:
    from stream_app.app import build_app

    pool = app_stack.pools["StreamFunction"]
    env = {
        **pool.spec.environment,
        **pool.aws_env,
        "AWS_REGION": "us-east-1",
        "SIGSTREAM_RATE_LIMIT_PER_MINUTE": "100000",
    }
    yield build_app(env, time.time)


def _url(stack: LocalStack, **spec: Any) -> tuple[str, str]:
    keys = parse_signing_keys(stack.secret_values()["signing-keys"])
    doc = issue_url(
        SignSpec(subject=new_subject(), **spec),
        keys,
        stack.endpoints()["stream_url"],
        now=int(time.time()),
        max_lifetime=3600,
        new_id=random_id,
    )
    parts = urlsplit(doc["url"])
    return parts.path, parts.query


def _run(app: Any, method: str, path: str, query: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    event = build_event(
        HttpRequest(method, path, query, [("content-type", content_type)], body, "127.0.0.1"),
        url_id="u",
        region="us-east-1",
        request_id="r",
        now=time.time(),
        iam=None,
    )
    result = app.handle(event)
    return result.status, b"".join(result.body)


@PROPERTY
@given(body=bodies, stateless=st.booleans(), content_type=st.sampled_from(["application/json", "", "text/plain"]))
def test_no_chat_body_makes_a_5xx(
    app_stack: LocalStack, app: Any, body: bytes, stateless: bool, content_type: str
) -> None:
    upstream_control(app_stack)
    path, query = _url(app_stack, stateless=stateless)
    status, data = _run(app, "POST", path, query, body, content_type)
    assert status < 500, (status, data[:300])
    assert b"Traceback" not in data
    if status == 200 and data.startswith(b"data:"):
        assert data.endswith(b"data: [DONE]\n\n")


@PROPERTY
@given(
    limit=st.text(max_size=6),
    after=st.text(max_size=40)
    | st.binary(max_size=40).map(lambda b: __import__("base64").urlsafe_b64encode(b).decode()),
    extra=st.text(max_size=20),
)
def test_no_listing_parameter_makes_a_5xx(app_stack: LocalStack, app: Any, limit: str, after: str, extra: str) -> None:
    path, query = _url(app_stack, method="GET", path="/v1/conversations")
    query += f"&limit={quote(limit)}&after={quote(after)}&{extra}"
    status, data = _run(app, "GET", path, query, b"", "")
    assert status < 500, (status, data[:300])


@PROPERTY
@given(query=st.lists(st.tuples(st.sampled_from(["X-Sw-Algorithm", "X-Sw-Date", "X-Sw-Expires", "X-Sw-Credential",
                                                  "X-Sw-SignedHeaders", "X-Sw-Proxy", "X-Sw-Body", "X-Sw-Signature"]),
                                 st.text(max_size=24)), max_size=9))  # fmt: skip
def test_no_sw1_query_makes_a_5xx(app: Any, query: list[tuple[str, str]]) -> None:
    raw = "&".join(f"{k}={quote(v)}" for k, v in query) or "X-Sw-"
    status, data = _run(app, "POST", "/", raw, b"{}", "application/json")
    assert status < 500, (status, data[:300])
