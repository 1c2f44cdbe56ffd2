"""The AI SDK's own code (installed `ai` 7 and 6, @ai-sdk/openai) judges our UI message stream and UI-message conversion."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from stream_app.chat.resume import ReplyProgress
from stream_app.chat.turn_output import CUT_OFF, ProgressOutput
from stream_app.chat.ui_messages import parse_ui_chat_body
from stream_app.chat.ui_stream import UiStreamEncoder
from tests.usechat import choice0, encode_text, encode_ui, recorded_chunks, recorded_index, sdk_check, ui_events

MAJORS = ("v7", "v6")


def _delta(**delta: Any) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": delta}]}


def _synthetic() -> dict[str, bytes]:
    """Streams beyond the recordings: failure, stop, resume, reasoning, bad tool arguments, dynamic tools."""
    cases: dict[str, bytes] = {}
    enc = UiStreamEncoder("m-err")
    cases["error-after-first-byte"] = enc.feed(_delta(content="partial ")) + enc.fail("upstream_error: provider down")
    enc = UiStreamEncoder("m-stop")
    cases["stopped"] = enc.feed(_delta(content="so far")) + enc.stop()
    enc, head = UiStreamEncoder.resume("m-res", "checkpointed ", metadata={"conversationId": "c"})
    cases["resumed"] = head + enc.text_delta("and new") + enc.finish()
    enc = UiStreamEncoder("m-reason")
    cases["reasoning"] = enc.feed(_delta(reasoning_content="think")) + enc.feed(_delta(content="answer")) + enc.finish()
    enc = UiStreamEncoder("m-badtool")
    cases["bad-tool-arguments"] = (
        enc.feed(_delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "t", "arguments": "[1,"}}]))
        + enc.finish()
    )
    enc = UiStreamEncoder("m-dyn", dynamic_tools=True)
    cases["dynamic-tool"] = (
        enc.feed(_delta(tool_calls=[{"index": 0, "id": "c2", "function": {"name": "lookup", "arguments": '{"q":1}'}}]))
        + enc.finish()
    )
    # GET /v1/chat/{id}/stream: a stored reply followed to its end (chat/turn_output.ProgressOutput).
    calls = ({"id": "call_r", "type": "function", "function": {"name": "getLocation", "arguments": "{}"}},)
    out = ProgressOutput("m-follow", metadata={"conversationId": "c"})
    cases["followed-tool-call"] = out.encode(ReplyProgress("Let me look. ", 12)) + out.encode(
        ReplyProgress("", 12, "complete", "tool_calls", calls)
    )
    out = ProgressOutput("m-follow-stop")
    cases["followed-stopped"] = out.encode(ReplyProgress("so far", 6)) + out.encode(ReplyProgress("", 6, "stopped"))
    out = ProgressOutput("m-follow-cut")
    cases["followed-cut"] = out.encode(ReplyProgress("half", 4)) + out.encode(ReplyProgress("", 4, "incomplete"))
    return cases


@pytest.fixture(scope="module")
def judged() -> dict[str, dict[str, Any]]:
    """Every recorded stream (UI and text mode) and every synthetic one, run through both SDK majors at once."""
    cases = [
        {
            "name": e["file"],
            "body": encode_ui(recorded_chunks(e["file"]), conversationId="c-1").decode(),
            "format": "ui",
        }
        for e in recorded_index()
    ]
    cases += [
        {"name": "text:" + e["file"], "body": encode_text(recorded_chunks(e["file"])).decode(), "format": "text"}
        for e in recorded_index()
    ]
    cases += [{"name": name, "body": body.decode(), "format": "ui"} for name, body in _synthetic().items()]
    # A deliberately broken stream: proves the check can fail (text-delta without id, unknown type).
    broken = (
        'data: {"type":"start"}\n\ndata: {"type":"text-delta","delta":"x"}\n\ndata: {"type":"nope"}\n\ndata: [DONE]\n\n'
    )
    cases.append({"name": "broken", "body": broken, "format": "ui"})
    return {result["name"]: result for result in sdk_check("streams", {"cases": cases})}


def _ok(result: dict[str, Any]) -> None:
    assert "thrown" not in result, result.get("thrown")
    assert result["chunks"] and all(c["ok"] for c in result["chunks"]), [c for c in result["chunks"] if not c["ok"]]


@pytest.mark.parametrize("entry", recorded_index(), ids=lambda e: e["file"])
@pytest.mark.parametrize("major", MAJORS)
def test_every_chunk_of_each_recorded_stream_validates_and_the_sdk_reads_back_its_text(
    judged: dict[str, dict[str, Any]], entry: dict[str, Any], major: str
) -> None:
    chunks = recorded_chunks(entry["file"])
    body = encode_ui(chunks, conversationId="c-1")
    result = judged[entry["file"]][major]
    _ok(result)
    ours = [event["type"] for event in ui_events(body)]
    assert [c["type"] for c in result["chunks"]] == ours  # the SDK's parser saw every event we sent
    assert result["types"] == ours  # ... and DefaultChatTransport passed each on
    assert result["errors"] == []
    refusal = choice0(chunks, "refusal")  # shown as text, as @ai-sdk/openai does; index.json counts content only
    assert result["text"] == entry["choice0_text"] + refusal
    message = result["message"]
    assert message["id"] == "msg-1" and message["role"] == "assistant"
    assert message["metadata"]["conversationId"] == "c-1"
    assert message["metadata"]["usage"] == entry["usage"]
    assert message["parts"][0] == {"type": "step-start"}
    tools = [p for p in message["parts"] if p["type"].startswith("tool-")]
    assert bool(tools) == entry["has_tool_calls"]
    for part in tools:
        assert part["state"] == "input-available" and isinstance(part["input"], dict)


@pytest.mark.parametrize("entry", recorded_index(), ids=lambda e: e["file"])
@pytest.mark.parametrize("major", MAJORS)
def test_text_mode_through_text_stream_chat_transport(
    judged: dict[str, dict[str, Any]], entry: dict[str, Any], major: str
) -> None:
    result = judged["text:" + entry["file"]][major]
    assert "thrown" not in result, result.get("thrown")
    chunks = recorded_chunks(entry["file"])
    assert result["text"] == entry["choice0_text"] + choice0(chunks, "refusal")
    assert result["types"][0] == "start" and result["types"][-1] == "finish"


@pytest.mark.parametrize("major", MAJORS)
def test_synthetic_streams_validate_and_read_back(judged: dict[str, dict[str, Any]], major: str) -> None:
    for name in _synthetic():
        _ok(judged[name][major])
    failed = judged["error-after-first-byte"][major]
    assert failed["errors"] == ["Error: upstream_error: provider down"]  # what useChat puts in `error`
    assert failed["text"] == "partial "
    stopped = judged["stopped"][major]
    assert stopped["text"] == "so far" and stopped["message"]["metadata"]["status"] == "stopped"
    resumed = judged["resumed"][major]
    assert resumed["text"] == "checkpointed and new" and resumed["message"]["id"] == "m-res"
    reasoning = judged["reasoning"][major]["message"]["parts"]
    assert [p["type"] for p in reasoning] == ["step-start", "reasoning", "text"]
    [bad_tool] = [p for p in judged["bad-tool-arguments"][major]["message"]["parts"] if p["type"] == "tool-t"]
    assert (
        bad_tool["state"] == "output-error" and bad_tool.get("input", bad_tool.get("rawInput")) == "[1,"
    )  # v6: rawInput
    [dynamic] = [p for p in judged["dynamic-tool"][major]["message"]["parts"] if p["type"] == "dynamic-tool"]
    assert dynamic["toolName"] == "lookup" and dynamic["input"] == {"q": 1}
    followed = judged["followed-tool-call"][major]["message"]
    [call] = [p for p in followed["parts"] if p["type"] == "tool-getLocation"]
    assert call["state"] == "input-available" and call["toolCallId"] == "call_r" and followed["id"] == "m-follow"
    assert judged["followed-stopped"][major]["message"]["metadata"]["status"] == "stopped"
    assert judged["followed-cut"][major]["errors"] == [f"Error: {CUT_OFF}"]


@pytest.mark.parametrize("major", MAJORS)
def test_the_schema_check_is_not_vacuous(judged: dict[str, dict[str, Any]], major: str) -> None:
    result = judged["broken"][major]
    verdicts = [c["ok"] for c in result.get("chunks", [])]
    assert verdicts[:1] == [True] and False in verdicts


PNG = "data:image/png;base64," + base64.b64encode(b"png").decode()
PDF = "data:application/pdf;base64," + base64.b64encode(b"%PDF").decode()
WAV = "data:audio/wav;base64," + base64.b64encode(b"RIFF").decode()
CONVERSIONS: dict[str, list[dict[str, Any]]] = {
    "text": [
        {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]},
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]},
        {"id": "a1", "role": "assistant", "parts": [{"type": "step-start"}, {"type": "text", "text": "Hello!"}]},
        {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "Bye"}, {"type": "text", "text": " now"}]},
    ],
    "files": [
        {
            "id": "u1",
            "role": "user",
            "parts": [
                {"type": "text", "text": "Look"},
                {"type": "file", "mediaType": "image/png", "url": PNG},
                {"type": "file", "mediaType": "image/jpeg", "url": "https://example.com/cat.jpg"},
                {"type": "file", "mediaType": "application/pdf", "url": PDF, "filename": "a.pdf"},
                {"type": "file", "mediaType": "application/pdf", "url": PDF},
                {"type": "file", "mediaType": "audio/wav", "url": WAV},
            ],
        }
    ],
    "tool-loop": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Weather and time?"}]},
        {
            "id": "a1",
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {"type": "reasoning", "text": "plan", "state": "done"},
                {"type": "text", "text": "Checking.", "state": "done"},
                {
                    "type": "tool-get_weather",
                    "toolCallId": "call_1",
                    "state": "output-available",
                    "input": {"city": "Paris", "units": ["c"]},
                    "output": {"temp": 21, "sky": "clear"},
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
                    "input": {"q": "x"},
                    "errorText": "not found",
                },
                {"type": "step-start"},
                {"type": "text", "text": "It is 21°C at noon.", "state": "done"},
                {"type": "data-note", "data": {"x": 1}},
            ],
        },
        {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "Thanks"}]},
    ],
}


def test_conversion_matches_what_the_ai_sdk_openai_provider_sends() -> None:
    """Our UIMessage -> chat-completions conversion equals convertToModelMessages + @ai-sdk/openai's request."""
    answers = sdk_check("convert", {"cases": [{"name": k, "messages": v} for k, v in CONVERSIONS.items()]})
    for answer in answers:
        assert "thrown" not in answer, answer
        ours = parse_ui_chat_body({"messages": CONVERSIONS[answer["name"]]}).openai_messages()
        assert ours == answer["messages"], answer["name"]


def test_what_default_chat_transport_posts_parses_and_where_it_reconnects() -> None:
    messages = CONVERSIONS["tool-loop"][:2]
    answer = sdk_check("request", {"messages": messages, "body": {"model": "gpt-4o-mini"}})
    post, get = answer["calls"]
    assert post["method"] == "POST" and post["url"] == "https://fn.example/v1/chat"
    assert {k.lower() for k in post["headers"]} == {"content-type"}
    assert set(post["body"]) == {"id", "messages", "trigger", "messageId", "model"}
    body = parse_ui_chat_body(post["body"])
    assert (body.chat_id, body.trigger, body.message_id, body.params) == (
        "chat-1",
        "regenerate-message",
        "a1",
        {"model": "gpt-4o-mini"},
    )
    assert json.dumps(post["body"]["messages"], sort_keys=True) == json.dumps(messages, sort_keys=True)
    assert get["method"] == "GET" and get["url"] == "https://fn.example/v1/chat/chat-1/stream" and get["body"] is None
    assert answer["reconnect204IsNull"] is True
