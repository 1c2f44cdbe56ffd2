"""The /v1/chat routes in the one route table, the Sign function's URLs for them, and the reply encoders (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sigstream.core.errors import BadRequestError
from sigstream.core.routes import match_route
from sigstream.core.settings import SigningKeys
from sigstream.core.signed_url import verify_query
from sigstream.core.url_issuer import SignSpec, issue_url
from stream_app.chat.resume import ReplyProgress
from stream_app.chat.turn_output import CUT_OFF, ProgressOutput, TextTurnOutput, UiTurnOutput
from stream_app.chat.ui_stream import UiStreamEncoder
from tests.usechat import ui_events

KEYS = SigningKeys("k1", {"k1": b"k" * 32})


def _chunk(**delta: Any) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": delta}]}


def test_the_ai_sdk_routes_are_in_the_route_table_beside_the_openai_ones() -> None:
    assert match_route("/v1/chat") is not None and match_route("/v1/chat").name == "ui_chat"  # type: ignore[union-attr]
    route = match_route("/v1/chat/conv_abcdefgh123/stream")
    assert route is not None and (route.name, route.method, route.conversation_id) == (
        "ui_resume_stream",
        "GET",
        "conv_abcdefgh123",
    )
    chat = match_route("/v1/chat/completions")
    assert chat is not None and chat.name == "chat"  # not taken for a chat id
    assert match_route("/v1/chat/x/y/stream") is None and match_route("/v1/chat/") is None


def test_the_sign_function_issues_v1_chat_urls_like_chat_completions_urls() -> None:
    def new_id(prefix: str) -> str:
        return prefix + "Generated0001"

    doc = issue_url(
        SignSpec("user-1", path="/v1/chat"), KEYS, "https://fn.example/", now=1000, max_lifetime=600, new_id=new_id
    )
    assert doc["conversation_id"] == "conv_Generated0001" and doc["url"].startswith("https://fn.example/v1/chat?")
    grant = verify_query(
        method="POST", path="/v1/chat", raw_query=doc["url"].split("?")[1], keys=KEYS.keys, now=1001, max_lifetime=600
    )
    assert grant.conversation_id == "conv_Generated0001"
    stateless = issue_url(
        SignSpec("user-1", path="/v1/chat", stateless=True),
        KEYS,
        "https://fn.example",
        now=1000,
        max_lifetime=600,
        new_id=new_id,
    )
    assert stateless["conversation_id"] is None
    resume = issue_url(
        SignSpec("user-1", method="GET", path="/v1/chat/conv_abcdefgh123/stream"),
        KEYS,
        "https://fn.example",
        now=1000,
        max_lifetime=600,
        new_id=new_id,
    )
    assert resume["conversation_id"] == "conv_abcdefgh123"
    with pytest.raises(BadRequestError, match="method must be GET"):
        issue_url(
            SignSpec("user-1", method="POST", path="/v1/chat/conv_abcdefgh123/stream"),
            KEYS,
            "https://fn.example",
            now=1000,
            max_lifetime=600,
            new_id=new_id,
        )


def test_ui_turn_output_ends_each_way_a_turn_can_end() -> None:
    complete = UiTurnOutput(UiStreamEncoder("m1"))
    body = complete.event(b"", _chunk(content="Hi"), 2) + complete.end("complete")
    assert [e["type"] for e in ui_events(body)][-2:] == ["finish-step", "finish"]
    stopped = UiTurnOutput(UiStreamEncoder("m2"))
    body = stopped.event(b"", _chunk(content="Hi"), 2) + stopped.end("stopped")
    events = ui_events(body)
    assert events[-2]["type"] == "abort" and events[-1]["messageMetadata"]["status"] == "stopped"
    failed = UiTurnOutput(UiStreamEncoder("m3"))
    body = (
        failed.event(b"", _chunk(content="Hi"), 2) + failed.error("upstream_error", "gone") + failed.end("incomplete")
    )
    events = ui_events(body)  # one [DONE], at the end: end() after error() adds nothing
    assert [e for e in events if e["type"] == "error"] == [{"type": "error", "errorText": "upstream_error: gone"}]
    text = TextTurnOutput()
    assert text.event(b"", _chunk(content="Hé"), 2) + text.error("x", "y") + text.end("incomplete") == "Hé".encode()


def test_progress_output_replays_the_checkpoint_then_follows_and_ends_with_the_stored_status() -> None:
    out = ProgressOutput("msg_1", metadata={"conversationId": "c"})
    body = out.encode(ReplyProgress("Hello ", 6)) + out.encode(ReplyProgress(keepalive=True))
    body += out.encode(ReplyProgress("world", 11)) + out.encode(ReplyProgress("", 11, "complete", "stop"))
    assert b": keep-alive\n\n" in body
    events = ui_events(body.replace(b": keep-alive\n\n", b""))
    assert events[0] == {"type": "start", "messageId": "msg_1", "messageMetadata": {"conversationId": "c"}}
    assert [e["delta"] for e in events if e["type"] == "text-delta"] == ["Hello ", "world"]
    assert events[-1] == {"type": "finish", "finishReason": "stop"}

    calls = ({"id": "call_1", "type": "function", "function": {"name": "getLocation", "arguments": "{}"}},)
    out = ProgressOutput("msg_2")
    events = ui_events(out.encode(ReplyProgress("", 0, "complete", "tool_calls", calls)))
    available = [e for e in events if e["type"] == "tool-input-available"]
    assert available == [
        {"type": "tool-input-available", "toolCallId": "call_1", "toolName": "getLocation", "input": {}}
    ]
    assert events[-1]["finishReason"] == "tool-calls"

    for status, last in (("stopped", "finish"), ("incomplete", "finish"), ("superseded", "finish")):
        events = ui_events(ProgressOutput("m").encode(ReplyProgress("ab", 2, status)))
        assert events[-1]["type"] == last
        assert any(e["type"] == "abort" for e in events) == (status == "stopped")
        assert any(e.get("errorText") == CUT_OFF for e in events) == (status != "stopped")

    text = ProgressOutput("m", text_only=True)
    assert text.encode(ReplyProgress("Hi", 2)) + text.encode(ReplyProgress(keepalive=True)) == b"Hi"
    assert json.dumps(dict(text.headers)).count("text/plain") == 1
