"""What an on-call engineer gets from the functions' logs, read from the real local stack's function output.

One JSON access line per request (never content or URLs), EMF metrics per route and per error code, provider
failures at WARNING with their cause, and nothing that is not JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from local.stack import LocalStack
from tests.helpers import http, new_subject, sign, signed_url, upstream_control

CHAT = {"content-type": "application/json"}
ACCESS_FIELDS = {"request_id", "method", "route", "status", "latency_ms"}


def _during(stack: LocalStack, action: Callable[[], Any], function: str = "StreamFunction") -> list[dict[str, Any]]:
    """The function's log lines (parsed) while `action` ran, up to and including its access line."""
    first = len(stack.logs.lines)
    action()
    deadline = time.monotonic() + 10
    while True:
        lines = [line for fn, line in stack.logs.lines[first:] if fn == function]
        parsed = [json.loads(line) for line in lines]  # every line is JSON, or this raises
        if any(p.get("message") == "access" for p in parsed) or time.monotonic() > deadline:
            time.sleep(0.2)  # the EMF blobs follow the access line
            return [json.loads(line) for fn, line in stack.logs.lines[first:] if fn == function]
        time.sleep(0.05)


def _access(lines: list[dict[str, Any]]) -> dict[str, Any]:
    (line,) = [p for p in lines if p.get("message") == "access"]  # exactly one per request
    assert ACCESS_FIELDS <= set(line), line
    return line


def _metrics(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in lines if "_aws" in p]


def _chat(answer: dict[str, Any], text: str) -> tuple[int, bytes]:
    body = json.dumps({"stream": True, "messages": [{"role": "user", "content": text}]}).encode()
    status, _, data = http("POST", answer["url"], body, CHAT)
    return status, data


def test_a_chat_turn_logs_one_access_line_with_its_timings_tokens_and_model(app_stack: LocalStack) -> None:
    upstream_control(app_stack, delay_ms=20)
    answer = signed_url(app_stack, subject=new_subject())
    lines = _during(app_stack, lambda: _chat(answer, "secret question text"))
    access = _access(lines)
    assert access["level"] == "INFO" and access["route"] == "chat" and access["method"] == "POST"
    assert access["status"] == 200 and access["outcome"] == "complete" and "code" not in access
    assert access["model"] and access["tokens_in"] > 0 and access["tokens_out"] > 0
    assert 0 < access["ttft_ms"] <= access["latency_ms"]
    assert access["request_id"] and access["conversation_id"] == answer["conversation_id"]
    text = json.dumps(lines)
    assert "secret question text" not in text and "Echo" not in text, "message content is never logged"
    assert "http://" not in text and "https://" not in text and "sig=" not in text, "nor a URL or query"


def test_metrics_carry_route_and_error_code_dimensions(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    answer = signed_url(app_stack, subject=new_subject())
    chat = _metrics(_during(app_stack, lambda: _chat(answer, "hello")))
    (main,) = [m for m in chat if "Requests" in m]
    (directive,) = main["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["service"], ["service", "route"]] and main["route"] == "chat"
    names = {m["Name"] for m in directive["Metrics"]}
    assert {"Requests", "ServerErrors", "ProviderErrors", "TimeToFirstToken", "TokensIn", "TokensOut"} <= names
    assert main["ServerErrors"] == [0.0] and main["Requests"] == [1.0]

    tampered = answer["url"][:-1] + ("B" if answer["url"].endswith("A") else "A")
    refused = _during(app_stack, lambda: http("POST", tampered, b"{}", CHAT))
    access = _access(refused)
    assert access["status"] == 403 and access["code"] == "invalid_signature" and access["route"] == "chat"
    (errors,) = [m for m in _metrics(refused) if "Errors" in m]
    assert errors["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "route", "code"]]
    assert (errors["route"], errors["code"]) == ("chat", "invalid_signature")
    (main,) = [m for m in _metrics(refused) if "Requests" in m]
    assert main["ClientErrors"] == [1.0] and main["ServerErrors"] == [0.0]


def test_list_calls_log_json_only_and_publish_metrics(app_stack: LocalStack) -> None:
    subject = new_subject()
    listing = signed_url(app_stack, subject=subject, method="GET", path="/v1/conversations")
    first = len(app_stack.logs.lines)
    lines = _during(app_stack, lambda: http("GET", listing["url"]))
    raw = [line for fn, line in app_stack.logs.lines[first:] if fn == "StreamFunction"]
    assert not any("Warning" in line and "python warning" not in line for line in raw), raw
    access = _access(lines)
    assert (access["route"], access["status"]) == ("list_conversations", 200)
    assert [m["Requests"] for m in _metrics(lines) if "Requests" in m] == [[1.0]]
    assert access.get("subject") == subject  # who, for the on-call engineer; never what


def test_a_provider_outage_is_a_warning_with_its_cause_and_counts_as_a_provider_error(app_stack: LocalStack) -> None:
    upstream_control(app_stack, faults=[{"status": 503}] * 3)  # the first try and both retries fail
    answer = signed_url(app_stack, subject=new_subject())
    lines = _during(app_stack, lambda: _chat(answer, "are you there"))
    (failure,) = [p for p in lines if p.get("message") == "provider failed"]
    assert failure["level"] == "WARNING" and failure["code"] == "upstream_error" and failure["status"] == 502
    assert "status=503" in failure["cause"], failure["cause"]
    access = _access(lines)
    assert access["level"] == "WARNING" and (access["status"], access["code"]) == (502, "upstream_error")
    (main,) = [m for m in _metrics(lines) if "Requests" in m]
    assert main["ProviderErrors"] == [1.0] and main["ServerErrors"] == [1.0]


def test_a_stream_the_provider_cuts_is_a_warning_with_its_cause(app_stack: LocalStack) -> None:
    upstream_control(app_stack, cut_after=2)
    answer = signed_url(app_stack, subject=new_subject())
    lines = _during(app_stack, lambda: _chat(answer, "one two three four five six"))
    (failure,) = [p for p in lines if p.get("message") == "upstream failed mid-stream"]
    assert failure["level"] == "WARNING" and failure["cause"]
    access = _access(lines)
    assert access["status"] == 200 and access["outcome"] == "incomplete" and access["level"] == "WARNING"
    assert access["code"] in ("upstream_error", "upstream_timeout")


def test_the_sign_function_logs_one_access_line_per_request(app_stack: LocalStack) -> None:
    lines = _during(app_stack, lambda: signed_url(app_stack, subject=new_subject()), function="SignFunction")
    access = _access(lines)
    assert (access["route"], access["status"], access["method"]) == ("sign", 200, "POST")
    (blob,) = [m for m in _metrics(lines)]
    assert blob["Requests"] == [1.0] and blob["ServerErrors"] == [0.0] and blob["UrlsIssued"] == [1.0]
    assert "https://" not in json.dumps(lines) and "http://" not in json.dumps(lines)


def test_the_sign_functions_errors_carry_their_code_in_the_access_line_and_metrics(app_stack: LocalStack) -> None:
    lines = _during(app_stack, lambda: sign(app_stack, {"subject": "x", "expires_in": 0}), function="SignFunction")
    access = _access(lines)
    assert (access["status"], access["code"]) == (400, "invalid_request")
    errors = [m for m in _metrics(lines) if "Errors" in m]
    assert errors and errors[0]["code"] == "invalid_request" and errors[0]["route"] == "sign"
