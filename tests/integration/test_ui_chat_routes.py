"""POST /v1/chat and GET /v1/chat/{id}/stream on the real local stack, driven by the AI SDK's own transports (Node).

Every request goes through `DefaultChatTransport` / `TextStreamChatTransport` of the installed `ai` package with
async `prepareSendMessagesRequest` / `prepareReconnectToStreamRequest` returning a fresh signed URL, as a useChat app
does; every chunk the gateway sent is validated by `uiMessageChunkSchema` of ai 7 and ai 6, and the next request
resends the message the SDK itself built (readUIMessageStream). The stored history is compared with what the user saw.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack
from local.template import load_template
from sigstream.core.settings import parse_signing_keys
from sigstream.core.signed_url import Grant, sign_query
from tests.conftest import ROOT
from tests.helpers import http, new_subject, signed_url, upstream_control, upstream_requests
from tests.usechat import sdk_check

MAJORS = ("v7", "v6")


def user(text: str, message_id: str) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


class Chat:
    """One useChat conversation of one subject: signed URLs per request, as the app's backend hands them out."""

    def __init__(self, stack: LocalStack, subject: str | None = None) -> None:
        self.stack = stack
        self.subject = subject or new_subject()
        self.id: str = signed_url(stack, subject=self.subject, path="/v1/chat")["conversation_id"]
        self.messages: list[dict[str, Any]] = []

    def url(self, purpose: str = "chat", **extra: Any) -> str:
        method, path = {
            "chat": ("POST", "/v1/chat"),
            "stream": ("GET", f"/v1/chat/{self.id}/stream"),
            "stop": ("POST", f"/v1/conversations/{self.id}/stop"),
            "messages": ("GET", f"/v1/conversations/{self.id}/messages"),
        }[purpose]
        doc: dict[str, Any] = {"subject": self.subject, "method": method, "path": path, **extra}
        if purpose == "chat":
            doc["conversation_id"] = self.id
        return str(signed_url(self.stack, **doc)["url"])

    def expired_url(self) -> str:
        """A /v1/chat URL signed with the stack's real key for a window that ended an hour ago."""
        assert self.stack.moto is not None
        secrets = self.stack.moto.client("secretsmanager")
        arn = next(s["ARN"] for s in secrets.list_secrets()["SecretList"] if "SigningKeys" in s["Name"])
        keys = parse_signing_keys(secrets.get_secret_value(SecretId=arn)["SecretString"])
        now = int(time.time())
        grant = Grant("POST", "/v1/chat", self.subject, now - 3600, now - 3300, self.id)
        query = sign_query(grant, keys.active, keys.keys[keys.active])
        return f"{self.stack.endpoints()['stream_url']}v1/chat?{query}"

    def case(self, name: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "api": self.url(), "chatId": self.id, "messages": self.messages, **fields}

    def stored(self, include_superseded: bool = False) -> list[dict[str, Any]]:
        url = self.url("messages") + "&limit=100" + ("&include=superseded" if include_superseded else "")
        status, _, body = http("GET", url)
        assert status == 200, body
        data: list[dict[str, Any]] = json.loads(body)["data"]
        return data


def run(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = sdk_check("live", {"cases": cases})
    return result


def assert_valid(result: dict[str, Any]) -> dict[str, Any]:
    """Every chunk validates in both majors, nothing thrown; the message ai 7 built."""
    assert "thrown" not in result["transport"], result
    assert result["response"]["status"] == 200, result["response"]
    for major in MAJORS:
        chunks = result[major]["chunks"]
        assert chunks and all(c["ok"] for c in chunks), (major, [c for c in chunks if not c["ok"]])
        assert result[major]["errors"] == [], result[major]
    message: dict[str, Any] = result["v7"]["message"]
    assert result["v6"]["message"] == message
    return message


def text_of(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def stored_view(stored: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(m["role"], m.get("content")) for m in stored]


@pytest.fixture()
def chat(app_stack: LocalStack) -> Iterator[Chat]:
    upstream_control(app_stack)
    yield Chat(app_stack)
    upstream_control(app_stack)  # faults, cuts and pacing must not reach the next test on this stack


def test_default_chat_transport_multi_turn_every_chunk_valid_and_history_stored_once(
    app_stack: LocalStack, chat: Chat
) -> None:
    chat.messages = [user("hello", "u1")]
    [first] = run([chat.case("turn-1")])
    reply = assert_valid(first)
    headers = first["response"]["headers"]
    assert headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert headers["content-type"].startswith("text/event-stream")
    assert headers.get("x-request-id"), headers  # exposed by CORS, now actually sent
    assert text_of(reply) == "Echo (1 messages): hello"
    types = [c["type"] for c in first["v7"]["chunks"]]
    assert types[0] == "start" and types[-1] == "finish" and "text-delta" in types
    assert first["response"]["body"].endswith("data: [DONE]\n\n")
    assert reply["metadata"]["conversationId"] == chat.id and reply["metadata"]["usage"]["completion_tokens"] > 0
    stored = chat.stored()
    assert reply["id"] == stored[1]["id"]  # the UI message id is the stored reply's id (resume and reload agree)

    chat.messages = [chat.messages[0], reply, user("and again", "u2")]  # useChat resends everything
    [second] = run([chat.case("turn-2")])
    again = assert_valid(second)
    assert text_of(again) == "Echo (3 messages): and again"
    sent = upstream_requests(app_stack)[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]  # each message once at the provider
    assert stored_view(chat.stored()) == [
        ("user", "hello"),
        ("assistant", "Echo (1 messages): hello"),
        ("user", "and again"),
        ("assistant", "Echo (3 messages): and again"),
    ]


def test_regenerate_replaces_the_last_reply_without_a_second_user_turn(chat: Chat) -> None:
    chat.messages = [user("hello", "u1")]
    first = assert_valid(run([chat.case("turn-1")])[0])
    # regenerate(): useChat slices off the assistant message and sends the rest with trigger regenerate-message.
    [again] = run([chat.case("regenerate", trigger="regenerate-message", messageId=first["id"])])
    second = assert_valid(again)
    assert second["id"] != first["id"]
    assert stored_view(chat.stored()) == [("user", "hello"), ("assistant", text_of(second))]
    everything = chat.stored(include_superseded=True)
    assert [m["status"] for m in everything] == ["complete", "superseded", "complete"]
    assert everything[1]["id"] == first["id"]
    chat.messages = [chat.messages[0], second, user("next", "u2")]
    assert_valid(run([chat.case("after-regenerate")])[0])  # the regenerated history is the one that continues
    assert [m["role"] for m in chat.stored()] == ["user", "assistant", "user", "assistant"]


def test_regenerating_an_earlier_reply_is_a_clear_409(chat: Chat) -> None:
    chat.messages = [user("one", "u1")]
    first = assert_valid(run([chat.case("turn-1")])[0])
    chat.messages = [chat.messages[0], first, user("two", "u2")]
    assert_valid(run([chat.case("turn-2")])[0])
    # regenerate({messageId: first.id}): useChat keeps the messages before it, so only "one" is sent.
    chat.messages = [user("one", "u1"), first, user("two", "u2")][:1]
    [result] = run([chat.case("regenerate-first", trigger="regenerate-message", messageId=first["id"])])
    assert result["transport"]["statusCode"] == 409, result
    error = json.loads(result["transport"]["thrown"])["error"]
    assert error["code"] == "history_conflict", error
    assert len(chat.stored()) == 4  # nothing superseded, nothing added


def test_a_page_that_did_not_load_the_stored_history_is_told_so(chat: Chat) -> None:
    chat.messages = [user("one", "u1")]
    assert_valid(run([chat.case("turn-1")])[0])
    chat.messages = [user("two", "u9")]  # useChat started empty on a conversation that has a history
    [result] = run([chat.case("without-history")])
    assert result["transport"]["statusCode"] == 409, result
    error = json.loads(result["transport"]["thrown"])["error"]
    assert error["code"] == "history_conflict" and "GET /v1/conversations/{id}/messages" in error["message"]
    assert [m["content"] for m in chat.stored()] == ["one", "Echo (1 messages): one"]


def test_text_stream_transport_gets_the_answer_as_plain_text(chat: Chat) -> None:
    chat.messages = [user("plain please", "u1")]
    [result] = run([chat.case("text", format="text")])
    assert "thrown" not in result["transport"], result
    assert result["response"]["headers"]["content-type"].startswith("text/plain")
    assert result["response"]["body"] == "Echo (1 messages): plain please"
    for major in MAJORS:
        assert result[major]["text"] == "Echo (1 messages): plain please", result[major]
    assert stored_view(chat.stored())[-1] == ("assistant", "Echo (1 messages): plain please")


def test_a_body_id_naming_another_conversation_is_refused(chat: Chat) -> None:
    chat.messages = [user("hello", "u1")]
    case = chat.case("other-id")
    case["chatId"] = "conv_someoneElsesConversation1"
    [result] = run([case])
    assert result["transport"]["statusCode"] == 400
    error = json.loads(result["transport"]["thrown"])["error"]
    assert error["param"] == "id" and "another chat" in error["message"]
    status, _, _ = http("GET", chat.url("messages"))
    assert status == 404  # nothing was stored


def test_editing_a_sent_message_is_refused_with_a_clear_409(chat: Chat) -> None:
    chat.messages = [user("hello", "u1")]
    assert_valid(run([chat.case("turn")])[0])
    chat.messages = [user("hello, edited", "u1")]  # sendMessage({text, messageId: "u1"})
    [result] = run([chat.case("edit", messageId="u1")])
    assert result["transport"]["statusCode"] == 409
    error = json.loads(result["transport"]["thrown"])["error"]
    assert error["code"] == "history_conflict" and error["param"] == "messageId"
    assert [m["content"] for m in chat.stored()] == ["hello", "Echo (1 messages): hello"]


def test_reconnect_without_a_reply_in_progress_is_204_and_null_in_the_sdk(chat: Chat) -> None:
    chat.messages = [user("hello", "u1")]
    assert_valid(run([chat.case("turn")])[0])
    [result] = run([{**chat.case("reconnect"), "api": chat.url("stream"), "reconnect": True}])
    assert result["transport"] == {"none": True} and result["response"]["status"] == 204


def in_progress(chat: Chat, min_chars: int = 1, timeout: float = 30) -> None:
    """Wait until the conversation's reply is stored in progress with some checkpointed text (not a fixed sleep:
    the Node process starting the request takes its own time on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = http("GET", chat.url("messages"))
        replies = json.loads(body)["data"] if status == 200 else []
        if any(m["status"] == "in_progress" and len(m.get("content") or "") >= min_chars for m in replies):
            return
        time.sleep(0.1)
    raise AssertionError("no reply in progress")


def _later(delay: float, action: Any, chat: Chat | None = None, min_chars: int = 1) -> threading.Thread:
    """Run `action` `delay` seconds after the chat's reply is in progress (or after `delay` alone)."""

    def wait_then_act() -> None:
        if chat is not None:
            in_progress(chat, min_chars)
        time.sleep(delay)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def test_reconnect_mid_answer_replays_then_follows_to_the_end(app_stack: LocalStack, chat: Chat) -> None:
    upstream_control(app_stack, reply=" ".join(f"w{i}" for i in range(40)), delay_ms=100)
    chat.messages = [user("slow", "u1")]
    results: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: results.update(live=run([chat.case("live")])[0]))
    sender.start()
    in_progress(chat, min_chars=4)  # a checkpoint (about once a second) has been written
    [resumed] = run([{**chat.case("reconnect"), "api": chat.url("stream"), "reconnect": True}])
    sender.join(60)
    live = assert_valid(results["live"])
    replay = assert_valid(resumed)
    assert replay["id"] == live["id"]  # the same message: useChat replaces it instead of adding one
    assert text_of(replay) == text_of(live) == " ".join(f"w{i}" for i in range(40))
    deltas = [json.loads(line[6:]) for line in resumed["response"]["body"].split("\n\n") if line.startswith("data: {")]
    first_delta = next(d for d in deltas if d["type"] == "text-delta")
    assert len(first_delta["delta"]) > 3  # the checkpointed text came first, in one piece (a replay)
    assert stored_view(chat.stored()) == [("user", "slow"), ("assistant", text_of(live))]


def test_text_stream_transport_reconnects_to_the_reply_as_plain_text(app_stack: LocalStack, chat: Chat) -> None:
    upstream_control(app_stack, reply=" ".join(f"w{i}" for i in range(30)), delay_ms=100)
    chat.messages = [user("slow text", "u1")]
    results: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: results.update(live=run([chat.case("live", format="text")])[0]))
    sender.start()
    in_progress(chat, min_chars=4)
    [resumed] = run([{**chat.case("reconnect", format="text"), "api": chat.url("stream"), "reconnect": True}])
    sender.join(60)
    full = " ".join(f"w{i}" for i in range(30))
    assert results["live"]["response"]["body"] == full
    assert resumed["response"]["headers"]["content-type"].startswith("text/plain")
    assert resumed["response"]["body"] == full  # replayed from the start, then followed: the text once
    for major in MAJORS:
        assert resumed[major]["text"] == full, resumed[major]


def test_stop_route_ends_the_stream_and_the_stored_reply_is_what_was_shown(app_stack: LocalStack, chat: Chat) -> None:
    upstream_control(app_stack, reply=" ".join(f"w{i}" for i in range(60)), delay_ms=100)
    chat.messages = [user("slow then stop", "u1")]
    results: dict[str, Any] = {}
    stopper = _later(0.3, lambda: results.update(stop=http("POST", chat.url("stop"), b"")), chat)
    [result] = run([chat.case("stopped")])
    stopper.join(30)
    assert results["stop"][0] == 200, results["stop"]
    message = assert_valid(result)
    types = [c["type"] for c in result["v7"]["chunks"]]
    assert types[-2:] == ["abort", "finish"] and message["metadata"]["status"] == "stopped"
    shown = text_of(message)
    assert 0 < len(shown) < len(" ".join(f"w{i}" for i in range(60)))
    [_, reply] = chat.stored()
    assert reply["status"] == "stopped" and reply["content"] == shown


def test_a_reply_stopped_before_its_first_token_does_not_break_the_next_turn(app_stack: LocalStack, chat: Chat) -> None:
    # The provider sends its role chunk (our first byte) and then stays silent: the stop lands before any text.
    upstream_control(app_stack, stall_after=1, stall_seconds=8)
    chat.messages = [user("hello", "u1")]
    results: dict[str, Any] = {}
    stopper = _later(0.5, lambda: results.update(stop=http("POST", chat.url("stop"), b"")), chat, min_chars=0)
    [result] = run([chat.case("stopped-early")])
    stopper.join(30)
    message = assert_valid(result)
    assert text_of(message) == "" and message["metadata"]["status"] == "stopped"
    assert [(m["role"], m["content"], m["status"]) for m in chat.stored()] == [
        ("user", "hello", "complete"),
        ("assistant", "", "stopped"),
    ]
    upstream_control(app_stack)
    chat.messages = [chat.messages[0], message, user("again", "u2")]  # the SDK's own (text-less) message resent
    again = assert_valid(run([chat.case("after-early-stop")])[0])
    assert text_of(again) == "Echo (3 messages): again"
    assert [m["content"] for m in chat.stored()] == ["hello", "", "again", "Echo (3 messages): again"]


def _tool_call_sse(path: Path) -> Path:
    """A provider stream that calls the page's client-side tool getLocation (OpenAI's chunk shapes)."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        doc = {
            "id": "chatcmpl-tool",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "local-echo-1",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return f"data: {json.dumps(doc)}\n\n"

    call = {"index": 0, "id": "call_loc1", "type": "function", "function": {"name": "getLocation", "arguments": ""}}
    path.write_text(
        chunk({"role": "assistant", "content": None, "tool_calls": [call]})
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})
        + chunk({}, "tool_calls")
        + "data: [DONE]\n\n"
    )
    return path


TOOLS = [
    {
        "type": "function",
        "function": {"name": "getLocation", "description": "The user's city.", "parameters": {"type": "object"}},
    }
]


def test_client_side_tool_round_trip_continues_the_same_message(
    app_stack: LocalStack, chat: Chat, tmp_path: Path
) -> None:
    upstream_control(app_stack, replay=str(_tool_call_sse(tmp_path / "tool.sse")))
    chat.messages = [user("where am I?", "u1")]
    first = assert_valid(run([chat.case("tool-call", body={"tools": TOOLS})])[0])
    [part] = [p for p in first["parts"] if p["type"] == "tool-getLocation"]
    assert part["state"] == "input-available" and part["input"] == {}
    # addToolResult: the part gets its output; useChat resends with the assistant message last.
    part.update(state="output-available", output={"city": "Paris"})
    upstream_control(app_stack)
    chat.messages = [chat.messages[0], first]
    [result] = run([chat.case("tool-result", body={"tools": TOOLS}, messageId=first["id"])])
    second = assert_valid(result)
    assert second["id"] == first["id"]  # the answer continues the same UI message
    sent = upstream_requests(app_stack)[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_loc1", "content": '{"city":"Paris"}'}
    stored = chat.stored()
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["function"]["name"] == "getLocation"
    assert stored[3]["content"] == text_of(second)


def test_errors_reach_the_transport_as_the_gateway_json(app_stack: LocalStack, chat: Chat) -> None:
    chat.messages = [user("hello", "u1")]
    expired = {**chat.case("expired"), "api": chat.expired_url()}
    upstream_control(app_stack, faults=[{"status": 429, "retry_after": 0}] * 6)
    limited = chat.case("rate-limited")
    [gone, refused] = run([expired, limited])
    assert gone["transport"]["statusCode"] == 403
    assert json.loads(gone["transport"]["thrown"])["error"]["code"] == "expired"
    assert refused["transport"]["statusCode"] == 429, refused
    upstream_control(app_stack, faults=[{"status": 503}] * 6)
    [down] = run([chat.case("provider-down")])
    assert down["transport"]["statusCode"] in (502, 503), down
    upstream_control(app_stack, reply="one two three four five six", cut_after=3)
    [cut] = run([chat.case("cut")])
    assert "thrown" not in cut["transport"] and cut["response"]["status"] == 200  # the failure came after byte 1
    for major in MAJORS:  # a valid `error` chunk: useChat's `error.message` is its text
        assert all(c["ok"] for c in cut[major]["chunks"]), cut[major]
        assert [c["type"] for c in cut[major]["chunks"]][-3:] == ["error", "finish-step", "finish"]
        assert len(cut[major]["errors"]) == 1 and "upstream_error" in cut[major]["errors"][0]
    assert text_of(cut["v7"]["message"]) == "one two "  # the role chunk, then two words, then the reset
    [_, reply] = chat.stored()
    assert reply["status"] == "incomplete" and reply["content"] == "one two "


def documented_allow_headers() -> list[str]:
    """The header list in docs/reference/ui-message-stream.md (between the cors-allow-headers markers)."""
    text = (ROOT / "docs" / "reference" / "ui-message-stream.md").read_text()
    block = text.split("<!-- cors-allow-headers:start -->")[1].split("<!-- cors-allow-headers:end -->")[0]
    return [line.strip().strip("`").lower() for line in block.splitlines() if line.strip().startswith("`")]


def test_the_function_url_cors_allows_every_documented_header_and_exposes_the_request_id(
    app_stack: LocalStack,
) -> None:
    documented = documented_allow_headers()
    cors = load_template(ROOT / "template.yaml")["Resources"]["StreamFunction"]["Properties"]["FunctionUrlConfig"][
        "Cors"
    ]
    assert sorted(h.lower() for h in cors["AllowHeaders"]) == sorted(documented)  # template == measured list
    assert {"x-request-id", "x-vercel-ai-ui-message-stream", "retry-after"} <= set(cors["ExposeHeaders"])
    origin = "http://127.0.0.1:5999"
    url = app_stack.endpoints()["stream_url"] + "v1/chat"
    status, headers, _ = http(
        "OPTIONS",
        url,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": ",".join(documented),
        },
    )
    lower = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and lower["access-control-allow-origin"] in ("*", origin)
    assert set(lower["access-control-allow-headers"].split(",")) >= set(documented)
    assert "GET" in lower["access-control-allow-methods"] and "POST" in lower["access-control-allow-methods"]
    # Every answer carries x-request-id, errors included (what a browser can quote when reporting a failure).
    status, headers, _ = http("POST", url, b"{}", {"origin": origin, "content-type": "application/json"})
    lower = {k.lower(): v for k, v in headers.items()}
    assert status == 400 and lower.get("x-request-id")  # no signature at all
    assert "x-request-id" in lower["access-control-expose-headers"].split(",")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"status": "complete"}, "status"),  # a server-owned field is no parameter
        ({"superseded_by": "msg_x"}, "superseded_by"),
        ({"stream": False}, "stream"),  # the gateway streams /v1/chat
        ({"stream_options": {"include_usage": False}}, "stream_options"),
        ({"messages": [{"id": "u1", "role": "user", "content": "hi"}]}, "messages[0].parts"),
        ({"messages": [{"id": "u1", "role": "tool", "parts": []}]}, "messages[0].role"),
        (
            {"messages": [{"id": "x" * 300, "role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
            "messages[0].id",
        ),
        ({"trigger": "resume-stream"}, "trigger"),
        ({"id": 42}, "id"),
    ],
)
def test_bad_v1_chat_bodies_are_400s_naming_the_field_and_store_nothing(
    chat: Chat, body: dict[str, Any], param: str
) -> None:
    doc = {"id": chat.id, "messages": [user("hi", "u1")], "trigger": "submit-message", **body}
    status, _, data = http("POST", chat.url(), json.dumps(doc).encode(), {"content-type": "application/json"})
    assert status == 400, data
    assert json.loads(data)["error"]["param"] == param
    assert http("GET", chat.url("messages"))[0] == 404  # nothing was stored


def test_client_metadata_and_ui_ids_never_become_stored_fields(chat: Chat) -> None:
    message = {**user("hi", "msg_chosenByTheClient"), "metadata": {"status": "superseded", "id": "msg_x"}}
    doc = {"id": chat.id, "messages": [message], "trigger": "submit-message"}
    status, _, data = http("POST", chat.url(), json.dumps(doc).encode(), {"content-type": "application/json"})
    assert status == 200 and data.endswith(b"data: [DONE]\n\n")
    stored = chat.stored()
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert "msg_chosenByTheClient" not in {m["id"] for m in stored}
    # The reconnect route reads no client position: a nonsense Last-Event-ID changes nothing.
    status, _, _ = http("GET", chat.url("stream"), headers={"last-event-id": "-1"})
    assert status == 204


def test_single_use_and_body_bound_urls_hold_on_v1_chat(chat: Chat) -> None:
    body = json.dumps({"id": chat.id, "messages": [user("once", "u1")], "trigger": "submit-message"}).encode()
    headers = {"content-type": "application/json"}
    once = chat.url(single_use=True)
    assert http("POST", once, body, headers)[0] == 200
    status, _, data = http("POST", once, body, headers)
    assert status == 403 and json.loads(data)["error"]["code"] == "already_used"
    other = Chat(chat.stack, chat.subject)
    body = json.dumps({"id": other.id, "messages": [user("bound", "u1")], "trigger": "submit-message"}).encode()
    bound = other.url(body_sha256=hashlib.sha256(body).hexdigest())
    assert (
        http("POST", bound, body.replace(b"bound", b"BOUND"), headers)[0] == 403
    )  # the signed body hash is the UI body's
    assert http("POST", bound, body, headers)[0] == 200


def test_the_gateways_own_rate_limit_reaches_the_transport_as_a_429(app_stack: LocalStack) -> None:
    subject = new_subject()
    url = signed_url(app_stack, subject=subject, path="/v1/chat", stateless=True, expires_in=120)["url"]
    body = json.dumps({"id": "c", "messages": [user("hi", "u1")], "trigger": "submit-message"}).encode()
    statuses = [http("POST", url, body, {"content-type": "application/json"})[0] for _ in range(20)]  # RateLimit 20
    assert statuses == [200] * 20
    [result] = run([{"name": "limited", "api": url, "chatId": "c", "messages": [user("hi", "u1")]}])
    assert result["transport"]["statusCode"] == 429, result
    assert json.loads(result["transport"]["thrown"])["error"]["code"] == "rate_limited"
    assert int(result["response"]["headers"]["retry-after"]) >= 1


def test_file_parts_reach_the_provider_as_content_parts_the_deployment_allows(
    app_stack: LocalStack, chat: Chat
) -> None:
    pixel = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    image = {"type": "file", "mediaType": "image/png", "url": pixel}
    chat.messages = [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "what is this?"}, image]}]
    reply = assert_valid(run([chat.case("image")])[0])
    assert text_of(reply).startswith("Echo (1 messages): what is this?")
    [sent] = upstream_requests(app_stack)[-1]["body"]["messages"]
    assert sent["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": pixel}},
    ]
    pdf = {"type": "file", "mediaType": "application/pdf", "url": "data:application/pdf;base64,JVBERi0xLjQK"}
    chat.messages = [
        *chat.messages,
        reply,
        {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "and"}, pdf]},
    ]
    [refused] = run([chat.case("pdf")])  # files are opt-in (ContentParts): a 400 naming the part, not a provider error
    assert refused["transport"]["statusCode"] == 400
    error = json.loads(refused["transport"]["thrown"])["error"]
    assert "file" in error["message"] and error["param"] == "messages[2].parts"  # the page's message, its parts


WEATHER = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
]


@pytest.mark.parametrize(
    ("control", "stop"),
    [
        ({"cut_after": 4}, False),  # the provider breaks off after finish_reason tool_calls, before its usage chunk
        ({"stall_after": 2, "stall_seconds": 8}, True),  # stopped halfway through the arguments
        ({"stall_after": 4, "stall_seconds": 8}, True),  # stopped after finish_reason, before the stream's end
    ],
    ids=["cut-after-finish-reason", "stopped-mid-arguments", "stopped-after-finish-reason"],
)
def test_a_tool_call_in_a_reply_that_did_not_end_is_not_shown_callable_and_the_chat_goes_on(
    app_stack: LocalStack, chat: Chat, control: dict[str, Any], stop: bool
) -> None:
    # The stored reply of a cut or stopped turn keeps its text only (no tool calls): a tool part the SDK shows as
    # input-available would run onToolCall and resend a result the store has no call for (409 forever), and an
    # output-error part (stop() mid-arguments) is resent as a call with a result, just as unknown.
    upstream_control(app_stack, tool_call={"name": "weather", "arguments": '{"city": "Paris"}'}, **control)
    chat.messages = [user("weather?", "u1")]
    results: dict[str, Any] = {}
    if stop:  # the provider stalls: the stop lands at that point of the reply
        stopper = _later(0.5, lambda: results.update(stop=http("POST", chat.url("stop"), b"")), chat, min_chars=0)
    [result] = run([chat.case("tool-call-cut", body={"tools": WEATHER})])
    if stop:
        stopper.join(30)
        assert json.loads(results["stop"][2])["stopped"] is True, results["stop"]
    reply = assert_valid(result) if stop else result["v7"]["message"]
    assert all(c["ok"] for major in MAJORS for c in result[major]["chunks"]), result
    tool_parts = [p for p in reply["parts"] if p["type"] == "tool-weather"]
    assert tool_parts and all(p["state"] == "input-streaming" for p in tool_parts), tool_parts
    [_, stored_reply] = chat.stored()
    assert stored_reply["status"] == ("stopped" if stop else "incomplete") and not stored_reply.get("tool_calls")
    upstream_control(app_stack)
    chat.messages = [chat.messages[0], reply, user("and now?", "u2")]  # the SDK's own message resent
    again = assert_valid(run([chat.case("after-cut", body={"tools": WEATHER})])[0])
    assert text_of(again) == "Echo (3 messages): and now?"
    assert [(m["role"], m["content"]) for m in chat.stored()] == [
        ("user", "weather?"),
        ("assistant", ""),
        ("user", "and now?"),
        ("assistant", "Echo (3 messages): and now?"),
    ]


def test_a_refused_request_names_the_ui_message_not_the_providers_message_index(
    app_stack: LocalStack, chat: Chat, tmp_path: Path
) -> None:
    # One UI message with a client-side tool step is three chat-completions messages (assistant, tool, assistant):
    # an error about the provider's messages[3] must name the page's messages[1], the message its code can find.
    upstream_control(app_stack, replay=str(_tool_call_sse(tmp_path / "tool.sse")))
    chat.messages = [user("where am I?", "u1")]
    first = assert_valid(run([chat.case("tool-call", body={"tools": TOOLS})])[0])
    [part] = [p for p in first["parts"] if p["type"] == "tool-getLocation"]
    part.update(state="output-available", output={"city": "Paris"})
    upstream_control(app_stack)
    chat.messages = [chat.messages[0], first]
    answered = assert_valid(run([chat.case("tool-result", body={"tools": TOOLS}, messageId=first["id"])])[0])
    shown = {**first, "parts": first["parts"] + answered["parts"]}  # useChat appends the answer to the message
    edited = json.loads(json.dumps(shown))
    edited["parts"][-1]["text"] += " (edited)"
    chat.messages = [chat.messages[0], edited, user("thanks", "u2")]
    [refused] = run([chat.case("edited-history", body={"tools": TOOLS})])
    assert refused["transport"]["statusCode"] == 409, refused
    error = json.loads(refused["transport"]["thrown"])["error"]
    assert error["code"] == "history_conflict"
    assert error["param"] == "messages[1].parts", error
    assert error["message"].startswith("messages[1] "), error
    chat.messages = [chat.messages[0], shown, {**user("x", "u2"), "parts": [{"type": "text", "text": 5}]}]
    [bad] = run([chat.case("bad-part", body={"tools": TOOLS})])  # the UI parser's own names stay as they were
    assert json.loads(bad["transport"]["thrown"])["error"]["param"] == "messages[2].parts[0].text"
