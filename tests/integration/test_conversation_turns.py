"""Conversations driven the way real chat frontends drive them (issue 13), over the local stack's real sockets.

Resent histories (openai-python), regenerates and conflicts, tool loops (openai-node runTools, the AI SDK's
streamText with stopWhen), a turn visible from its start, Stop, resume with Last-Event-ID, the rolling summary.
"""

from __future__ import annotations

import http.client as httpclient
import io
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from local.stack import LocalStack, StackOptions
from tests.conftest import ROOT
from tests.helpers import (
    http,
    new_subject,
    signed_url,
    sse_events,
    sse_ids,
    sse_text,
    table_items,
    upstream_control,
    upstream_requests,
)

JSON = {"content-type": "application/json"}
EXAMPLES = ROOT / "web" / "examples"
SLOW_REPLY = " ".join(f"word{i}" for i in range(60))


def client_for(answer: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=answer["base_url"], api_key="unused", default_query=answer["query"], max_retries=0)


def route(stack: LocalStack, subject: str, method: str, path: str) -> str:
    return str(signed_url(stack, subject=subject, method=method, path=path)["url"])


def messages_of(stack: LocalStack, subject: str, cid: str, query: str = "") -> list[dict[str, Any]]:
    status, _, body = http("GET", route(stack, subject, "GET", f"/v1/conversations/{cid}/messages") + query)
    assert status == 200, body
    return list(json.loads(body)["data"])


def provider_messages(stack: LocalStack) -> list[list[tuple[str, str | None]]]:
    """Each chat request the provider received, as (role, content) pairs."""
    return [
        [(m["role"], m.get("content")) for m in r["body"]["messages"]]
        for r in upstream_requests(stack)
        if not str(r["body"]["messages"][0].get("content")).startswith("You maintain a running summary")
    ]


class LiveStream:
    """A streaming chat request read on a thread, as a browser reads it: what arrived, and when it ended."""

    def __init__(self, url: str, messages: list[dict[str, Any]]) -> None:
        parts = urlsplit(url)
        self.conn = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.conn.request(
            "POST", f"{parts.path}?{parts.query}", json.dumps({"stream": True, "messages": messages}), JSON
        )
        self.response = self.conn.getresponse()
        self.body = b""
        self.ended_at: float | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self.response.read1(65536):
            self.body += chunk
        self.ended_at = time.monotonic()

    def wait_for_text(self, chars: int, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while len(sse_text(self.body)) < chars:
            assert time.monotonic() < end, "the stream did not get going"
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> bytes:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream did not end"
        return self.body


def test_openai_python_resending_its_whole_history_for_three_turns_stores_and_sends_each_message_once(
    app_stack: LocalStack,
) -> None:
    upstream_control(app_stack)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    cid = answer["conversation_id"]
    client = client_for(answer)
    history: list[Any] = []
    for number in (1, 2):  # the SDK's own reply objects go back in, as its docs show
        history.append({"role": "user", "content": f"question {number}"})
        reply = client.chat.completions.create(model="local-echo-1", messages=history)
        history.append(reply.choices[0].message)
    history[0] = {"role": "user", "content": [{"type": "text", "text": "question 1"}]}  # same text, as one part
    history.append({"role": "user", "content": "question 3"})
    stream = client.chat.completions.create(model="local-echo-1", messages=history, stream=True)
    third = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert third == "Echo (5 messages): question 3"
    sent = provider_messages(app_stack)
    assert sent[-1] == [
        ("user", "question 1"),
        ("assistant", "Echo (1 messages): question 1"),
        ("user", "question 2"),
        ("assistant", "Echo (3 messages): question 2"),
        ("user", "question 3"),
    ]
    assert [len(s) for s in sent] == [1, 3, 5]  # each turn: the stored history once, then the new message
    stored = messages_of(app_stack, subject, cid)
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "question 1", "complete"),
        ("assistant", "Echo (1 messages): question 1", "complete"),
        ("user", "question 2", "complete"),
        ("assistant", "Echo (3 messages): question 2", "complete"),
        ("user", "question 3", "complete"),
        ("assistant", "Echo (5 messages): question 3", "complete"),
    ]


def test_only_new_messages_still_work_and_a_regenerate_supersedes_the_last_reply(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    cid = answer["conversation_id"]
    client = client_for(answer)
    client.chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": "first"}])
    client.chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": "second"}])
    upstream_control(app_stack, reply="a better answer")
    resent = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo (1 messages): first"},
        {"role": "user", "content": "second"},
    ]
    again = client.chat.completions.create(model="local-echo-1", messages=resent)  # the history minus its reply
    assert again.choices[0].message.content == "a better answer"
    assert provider_messages(app_stack)[-1] == [(m["role"], m["content"]) for m in resent]  # old reply not sent
    active = messages_of(app_stack, subject, cid)
    assert [(m["role"], m["content"]) for m in active] == [
        *[(m["role"], m["content"]) for m in resent],
        ("assistant", "a better answer"),
    ]
    everything = messages_of(app_stack, subject, cid, "&include=superseded")
    old = [m for m in everything if m["status"] == "superseded"]
    assert [(m["content"], m["superseded_by"]) for m in old] == [("Echo (3 messages): second", active[-1]["id"])]
    # The next turn's context is the active history only.
    upstream_control(app_stack)
    client.chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": "third"}])
    assert [c for _, c in provider_messages(app_stack)[-1]] == [
        "first",
        "Echo (1 messages): first",
        "second",
        "a better answer",
        "third",
    ]


@pytest.mark.parametrize(
    ("messages", "param", "words"),
    [
        (
            [{"role": "user", "content": "first, edited"}, {"role": "assistant", "content": "x"}],
            "messages[0].content",
            "messages[0]",
        ),
        (
            [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "Echo (1 messages): first"},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "an answer the gateway never gave"},
                {"role": "user", "content": "more"},
            ],
            "messages[3].content",
            "stored message 3",
        ),
        (
            [{"role": "tool", "tool_call_id": "call_nobody_made", "content": "42"}],
            "messages[0].tool_call_id",
            "call_nobody_made",
        ),
    ],
    ids=["edited-first-message", "invented-assistant-reply", "tool-result-for-no-call"],
)
def test_a_history_that_does_not_match_is_a_409_naming_the_difference_and_stores_nothing(
    app_stack: LocalStack, messages: list[dict[str, Any]], param: str, words: str
) -> None:
    upstream_control(app_stack)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    cid = answer["conversation_id"]
    client_for(answer).chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": "first"}])
    client_for(answer).chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": "again"}])
    before = sorted(i["sk"]["S"] for i in table_items(app_stack, cid))
    calls = len(upstream_requests(app_stack))
    status, _, body = http("POST", answer["url"], json.dumps({"messages": messages}).encode(), JSON)
    error = json.loads(body)["error"]
    assert status == 409 and error["code"] == "history_conflict" and error["param"] == param, error
    assert words in error["message"]
    assert sorted(i["sk"]["S"] for i in table_items(app_stack, cid)) == before
    assert len(upstream_requests(app_stack)) == calls  # the provider was not called


def test_a_turn_is_listed_from_its_start_and_a_second_client_resumes_it_without_duplicates(
    app_stack: LocalStack,
) -> None:
    upstream_control(app_stack, delay_ms=60, reply=SLOW_REPLY)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    cid = answer["conversation_id"]
    live = LiveStream(answer["url"], [{"role": "user", "content": "tell me a long story"}])
    assert live.response.status == 200
    live.wait_for_text(60)
    time.sleep(1.5)  # past a checkpoint
    status, _, body = http("GET", route(app_stack, subject, "GET", "/v1/conversations"))
    assert cid in [c["id"] for c in json.loads(body)["data"]]  # listed while it streams
    during = messages_of(app_stack, subject, cid)
    assert [(m["role"], m["status"]) for m in during] == [("user", "complete"), ("assistant", "in_progress")]
    partial = during[1]["content"]
    assert partial and SLOW_REPLY.startswith(partial) and len(partial) < len(SLOW_REPLY)
    # A second client (a reloaded page) resumes from where the first one's events left off.
    seen = live.body
    last_id = sse_ids(seen)[-1]
    parts = urlsplit(route(app_stack, subject, "GET", f"/v1/conversations/{cid}/stream"))
    conn = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", f"{parts.path}?{parts.query}", headers={"last-event-id": str(last_id)})
    resumed = conn.getresponse()
    assert resumed.status == 200 and resumed.getheader("content-type", "").startswith("text/event-stream")
    rest = resumed.read()
    assert sse_events(rest)[-1] == b"data: [DONE]\n\n"
    ids = sse_ids(rest)
    assert ids == sorted(ids) and ids[0] == last_id  # event ids are positions in the reply's text
    assert sse_text(seen)[:last_id] + sse_text(rest) == SLOW_REPLY  # no duplicate, nothing missing
    body = live.finish()
    assert sse_text(body) == SLOW_REPLY
    after = messages_of(app_stack, subject, cid)
    assert (after[1]["content"], after[1]["status"]) == (SLOW_REPLY, "complete")
    status, _, nothing = http("GET", route(app_stack, subject, "GET", f"/v1/conversations/{cid}/stream"))
    assert status == 204 and nothing == b""  # nothing in progress any more


def test_stop_closes_the_provider_connection_within_a_second_and_stores_what_the_client_received(
    app_stack: LocalStack,
) -> None:
    upstream_control(app_stack, delay_ms=150, reply=SLOW_REPLY)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    cid = answer["conversation_id"]
    live = LiveStream(answer["url"], [{"role": "user", "content": "go on and on"}])
    live.wait_for_text(30)
    stop_url = route(app_stack, subject, "POST", f"/v1/conversations/{cid}/stop")
    asked = time.monotonic()
    asked_wall = time.time()
    status, _, body = http("POST", stop_url, b"", JSON)
    doc = json.loads(body)
    assert status == 200 and doc["object"] == "conversation.stop" and doc["stopped"] is True, doc
    received = live.finish()
    assert upstream_disconnects(app_stack), "the provider's connection was never closed"
    assert upstream_disconnects(app_stack)[0] - asked_wall < 1.5  # the provider stopped generating
    assert live.ended_at is not None and live.ended_at - asked < 2.0
    assert sse_events(received)[-1] == b"data: [DONE]\n\n"
    text = sse_text(received)
    assert 0 < len(text) < len(SLOW_REPLY)
    stored = messages_of(app_stack, subject, cid)
    assert (stored[1]["content"], stored[1]["status"]) == (text, "stopped")
    assert doc["message"]["status"] == "stopped" and doc["message"]["content"] == text
    # Nothing left to stop: a clear answer, not an error.
    status, _, body = http("POST", stop_url, b"{}", JSON)
    assert status == 200 and json.loads(body)["stopped"] is False


def test_stop_with_last_event_id_keeps_exactly_what_the_page_had_shown(app_stack: LocalStack) -> None:
    upstream_control(app_stack, delay_ms=100, reply=SLOW_REPLY)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    cid = answer["conversation_id"]
    live = LiveStream(answer["url"], [{"role": "user", "content": "go"}])
    live.wait_for_text(40)
    shown_id = sse_ids(live.body)[-1]
    shown = sse_text(live.body)[:shown_id]
    live.conn.sock.close()  # the page aborts its fetch first
    stop_url = route(app_stack, subject, "POST", f"/v1/conversations/{cid}/stop")
    status, _, body = http("POST", stop_url, b"", {"last-event-id": str(shown_id)})
    assert status == 200 and json.loads(body)["stopped"] is True
    stored = messages_of(app_stack, subject, cid)
    assert (stored[1]["content"], stored[1]["status"]) == (shown, "stopped")


@pytest.mark.parametrize("value", ["-1", "abc", "9" * 40, "1e3", "\u00b2", " 12 3"])
def test_odd_last_event_ids_are_a_400_never_a_5xx(app_stack: LocalStack, value: str) -> None:
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    upstream_control(app_stack)
    client_for(answer).chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": "hi"}])
    cid = answer["conversation_id"]
    for method, path in (("GET", "stream"), ("POST", "stop")):
        url = route(app_stack, subject, method, f"/v1/conversations/{cid}/{path}")
        status, _, body = http(method, url, b"" if method == "POST" else None, {"last-event-id": value})
        assert status == 400 and json.loads(body)["error"]["param"] == "last-event-id", (path, body)


def test_the_stop_route_takes_no_fields_and_never_stops_another_subjects_turn(app_stack: LocalStack) -> None:
    upstream_control(app_stack, delay_ms=100, reply=SLOW_REPLY)
    owner, other = new_subject(), new_subject()
    answer = signed_url(app_stack, subject=owner)
    cid = answer["conversation_id"]
    live = LiveStream(answer["url"], [{"role": "user", "content": "go"}])
    live.wait_for_text(10)
    mine = route(app_stack, owner, "POST", f"/v1/conversations/{cid}/stop")
    for body in (b'{"status": "complete"}', b'{"stop_at": 3}', b"[1]", b"not json"):
        status, _, answer_body = http("POST", mine, body, JSON)
        assert status == 400, answer_body
    theirs = route(app_stack, other, "POST", f"/v1/conversations/{cid}/stop")
    status, _, body = http("POST", theirs, b"", JSON)
    assert status in (200, 404) and json.loads(body).get("stopped") is not True
    upstream_control(app_stack)  # let the stream finish quickly
    body = live.finish()
    assert messages_of(app_stack, owner, cid)[1]["status"] == "complete"


def upstream_disconnects(stack: LocalStack) -> list[float]:
    assert stack.upstream is not None
    with stack.upstream.control.lock:
        return list(stack.upstream.control.disconnects)


def node_run(script: Path, answer: dict[str, Any], question: str) -> dict[str, Any]:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are part of this machine image (and installed by CI)"
    if not (script.parent / "node_modules").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=script.parent, check=True, capture_output=True, timeout=600
        )
    result = subprocess.run(
        [node, script.name, json.dumps(answer), question],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def check_tool_loop(stack: LocalStack, subject: str, cid: str, question: str) -> None:
    """The provider got a valid sequence each step, and the history holds the loop once, in order."""
    steps = [r["body"]["messages"] for r in upstream_requests(stack)]
    assert [[m["role"] for m in s] for s in steps] == [["user"], ["user", "assistant", "tool"]]
    call = steps[1][1]["tool_calls"][0]
    assert steps[1][2]["tool_call_id"] == call["id"] and call["function"]["name"] == "get_weather"
    stored = messages_of(stack, subject, cid)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("tool", "complete"),
        ("assistant", "complete"),
    ]
    assert stored[0]["content"] == question
    assert stored[1]["tool_calls"][0]["id"] == call["id"] and stored[2]["tool_call_id"] == call["id"]
    assert json.loads(stored[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert stored[3]["content"].startswith("Echo (3 messages)")


def test_openai_node_run_tools_completes_a_tool_loop_on_a_conversation_url(app_stack: LocalStack) -> None:
    upstream_control(app_stack, delay_ms=5, tool_call={"name": "get_weather", "arguments": '{"city": "Paris"}'})
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    out = node_run(EXAMPLES / "run-tools.mjs", answer, "weather in Paris?")
    assert out["calls"] == [{"city": "Paris"}] and out["content"].startswith("Echo (3 messages)")
    check_tool_loop(app_stack, subject, answer["conversation_id"], "weather in Paris?")


def test_ai_sdk_stream_text_with_stop_when_completes_a_tool_loop_on_a_conversation_url(app_stack: LocalStack) -> None:
    upstream_control(app_stack, delay_ms=5, tool_call={"name": "get_weather", "arguments": '{"city":"Paris"}'})
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    out = node_run(EXAMPLES / "usechat" / "tool-loop.mjs", answer, "weather in Paris?")
    assert out["calls"] == [{"city": "Paris"}] and out["steps"] == 2 and out["text"].startswith("Echo (3 messages)")
    check_tool_loop(app_stack, subject, answer["conversation_id"], "weather in Paris?")


@pytest.fixture(scope="module")
def short_window_stack() -> Iterator[LocalStack]:
    """template.yaml with a two-message window, so the third turn's window drops the first turn."""
    stack = LocalStack(
        StackOptions(
            root=ROOT,
            template=ROOT / "template.yaml",
            parameters={"HistoryMaxMessages": "2", "SummaryMaxTokens": "64", "DailyTokenBudget": "100000"},
            log_stream=io.StringIO(),
        )
    )
    stack.start()
    yield stack
    stack.stop()


def budget_tokens(stack: LocalStack, subject: str) -> int:
    assert stack.moto is not None
    ddb = stack.moto.client("dynamodb")
    table = ddb.list_tables()["TableNames"][0]
    day = time.strftime("DAY#%Y%m%d", time.gmtime())
    item = ddb.get_item(TableName=table, Key={"pk": {"S": f"RATE#{subject}"}, "sk": {"S": day}}).get("Item", {})
    return int(item.get("tokens", {}).get("N", "0"))


def streamed(client: openai.OpenAI, text: str) -> str:
    stream = client.chat.completions.create(
        model="local-echo-1", messages=[{"role": "user", "content": text}], stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_the_rolling_summary_is_written_after_the_turn_and_opens_later_windows(
    short_window_stack: LocalStack,
) -> None:
    stack = short_window_stack
    upstream_control(stack, summary="SUMMARY: the user asked about apples.")
    subject = new_subject()
    answer = signed_url(stack, subject=subject)
    cid = answer["conversation_id"]
    client = client_for(answer)
    streamed(client, "apples?")  # non-streamed chat calls get the `summary` control's text from this provider
    assert len(upstream_requests(stack)) == 1  # two stored messages fit the window: nothing to summarise
    charged = budget_tokens(stack, subject)
    status, _, body = http(
        "POST",
        answer["url"],
        json.dumps({"stream": True, "messages": [{"role": "user", "content": "pears?"}]}).encode(),
        JSON,
    )
    done_at = time.time()
    assert status == 200 and sse_events(body)[-1] == b"data: [DONE]\n\n"
    end = time.monotonic() + 10
    while len(upstream_requests(stack)) < 3 and time.monotonic() < end:
        time.sleep(0.05)
    turn, summary_call = upstream_requests(stack)[1:3]
    assert turn["body"]["stream"] is True and summary_call["body"]["stream"] is False
    assert summary_call["at"] >= done_at - 0.05  # after the client had [DONE] (the only slack: clock reads)
    transcript = summary_call["body"]["messages"][-1]["content"]
    assert "user: apples?" in transcript and "assistant: Echo (1 messages): apples?" in transcript
    meta = next(i for i in table_items(stack, cid) if i["sk"]["S"] == "~META")
    assert meta["summary"]["S"] == "SUMMARY: the user asked about apples." and meta["summary_through"]["N"] == "2"
    end = time.monotonic() + 5
    while budget_tokens(stack, subject) <= charged + 0 and time.monotonic() < end:
        time.sleep(0.05)
    # Both turns and the summary call are charged (the fake provider reports usage for each).
    assert budget_tokens(stack, subject) > charged
    streamed(client, "plums?")
    third = [r for r in upstream_requests(stack) if r["body"]["stream"]][-1]  # (its own summary call may follow)
    window = [(m["role"], m["content"]) for m in third["body"]["messages"]]
    assert window == [
        ("system", "Summary of the earlier conversation: SUMMARY: the user asked about apples."),
        ("user", "pears?"),
        ("assistant", "Echo (3 messages): pears?"),
        ("user", "plums?"),
    ]


def test_summary_max_tokens_zero_turns_the_summary_off(tmp_path: Path) -> None:
    stack = LocalStack(
        StackOptions(
            root=ROOT,
            template=ROOT / "template.yaml",
            parameters={"HistoryMaxMessages": "2", "SummaryMaxTokens": "0"},
            log_stream=io.StringIO(),
        )
    )
    stack.start()
    try:
        upstream_control(stack, summary="never asked for")
        answer = signed_url(stack, subject=new_subject())
        client = client_for(answer)
        for text in ("one?", "two?", "three?"):
            streamed(client, text)
        time.sleep(0.5)  # time for a summary call, were there one
        assert [r["body"]["stream"] for r in upstream_requests(stack)] == [True, True, True]
        window = [m["content"] for m in upstream_requests(stack)[-1]["body"]["messages"]]
        assert window == ["two?", "Echo (3 messages): two?", "three?"]  # the window alone, no summary message
        meta = next(i for i in table_items(stack, answer["conversation_id"]) if i["sk"]["S"] == "~META")
        assert "summary" not in meta
    finally:
        stack.stop()


def test_an_answer_longer_than_a_dynamodb_item_is_stored_whole_and_read_back(app_stack: LocalStack) -> None:
    long_reply = ("é" * 500 + " ") * 700  # ~700 KB of UTF-8, beyond the 400 KB item limit
    upstream_control(app_stack, reply=long_reply)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    cid = answer["conversation_id"]
    assert streamed(client_for(answer), "a very long answer, please") == long_reply
    keys = sorted(i["sk"]["S"] for i in table_items(app_stack, cid))
    assert keys[:3] == ["MSG#00000001", "MSG#00000002", "MSG#00000002.001"] and keys[-1] == "~META"
    stored = messages_of(app_stack, subject, cid)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1]["content"] == long_reply
    # The next turn still works: a reply over the window's token budget stays out (the summary takes it in).
    end = time.monotonic() + 10
    while time.monotonic() < end and not any("summary" in i for i in table_items(app_stack, cid)):
        time.sleep(0.1)  # written after the response, by the environment that served it
    upstream_control(app_stack)
    assert streamed(client_for(answer), "and now?") == "Echo (2 messages): and now?"
    turn = [r for r in upstream_requests(app_stack) if r["body"]["stream"]][-1]["body"]["messages"]
    assert [m["role"] for m in turn] == ["system", "user"]  # the summary of what the window left out, the question
    assert turn[0]["content"].startswith("Summary of the earlier conversation: ")


def test_a_reply_whose_turn_died_reads_as_incomplete_and_blocks_nothing(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    cid = answer["conversation_id"]
    streamed(client_for(answer), "first")
    assert stack_moto(app_stack) is not None
    client, table = stack_moto(app_stack)
    pk = {"S": f"CONV#{cid}"}
    now = int(time.time())
    # What a Lambda killed mid-stream leaves: a reply in progress whose lease ran out, with its last checkpoint.
    client.put_item(
        TableName=table,
        Item={
            "pk": pk, "sk": {"S": "MSG#00000003"}, "id": {"S": "msg_dead_user"}, "role": {"S": "user"},
            "content": {"S": "second"}, "status": {"S": "complete"}, "created_at": {"N": str(now - 60)},
        },
    )  # fmt: skip
    client.put_item(
        TableName=table,
        Item={
            "pk": pk, "sk": {"S": "MSG#00000004"}, "id": {"S": "msg_dead_reply"}, "role": {"S": "assistant"},
            "content": {"S": "half an ans"}, "status": {"S": "in_progress"}, "lease_until": {"N": str(now - 5)},
            "created_at": {"N": str(now - 60)},
        },
    )  # fmt: skip
    client.update_item(
        TableName=table,
        Key={"pk": pk, "sk": {"S": "~META"}},
        UpdateExpression="SET message_count = :n",
        ExpressionAttributeValues={":n": {"N": "4"}},
    )
    stored = messages_of(app_stack, subject, cid)
    assert (stored[3]["content"], stored[3]["status"]) == ("half an ans", "incomplete")
    status, _, _ = http("GET", route(app_stack, subject, "GET", f"/v1/conversations/{cid}/stream"))
    assert status == 204
    status, _, body = http("POST", route(app_stack, subject, "POST", f"/v1/conversations/{cid}/stop"), b"", JSON)
    assert status == 200 and json.loads(body)["stopped"] is False
    # A regenerate of the dead reply works (it is not being written any more).
    resent = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo (1 messages): first"},
        {"role": "user", "content": "second"},
    ]
    again = client_for(answer).chat.completions.create(model="local-echo-1", messages=resent)
    assert again.choices[0].message.content == "Echo (3 messages): second"
    assert [m["status"] for m in messages_of(app_stack, subject, cid)] == ["complete"] * 4


def stack_moto(stack: LocalStack) -> tuple[Any, str]:
    assert stack.moto is not None
    client = stack.moto.client("dynamodb")
    return client, client.list_tables()["TableNames"][0]


def test_stop_is_noticed_while_the_provider_is_silent(app_stack: LocalStack) -> None:
    upstream_control(app_stack, stall_after=6, stall_seconds=20, reply=SLOW_REPLY)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    cid = answer["conversation_id"]
    live = LiveStream(answer["url"], [{"role": "user", "content": "think hard"}])
    live.wait_for_text(len("word0 word1 word2 word3 word4"))  # then the provider goes quiet for 20 s
    time.sleep(0.5)
    asked = time.time()
    status, _, body = http("POST", route(app_stack, subject, "POST", f"/v1/conversations/{cid}/stop"), b"", JSON)
    assert status == 200 and json.loads(body)["stopped"] is True
    received = live.finish(timeout=10)
    assert upstream_disconnects(app_stack) and upstream_disconnects(app_stack)[0] - asked < 1.5
    assert sse_events(received)[-1] == b"data: [DONE]\n\n"
    stored = messages_of(app_stack, subject, cid)
    assert (stored[1]["content"], stored[1]["status"]) == (sse_text(received), "stopped")


@pytest.mark.parametrize("query", ["&include=everything", "&include=", "&include=superseded&include=superseded"])
def test_the_messages_listing_refuses_unknown_include_values(app_stack: LocalStack, query: str) -> None:
    upstream_control(app_stack)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    streamed(client_for(answer), "hi")
    url = route(app_stack, subject, "GET", f"/v1/conversations/{answer['conversation_id']}/messages")
    status, _, body = http("GET", url + query)
    assert status == 400 and b"Traceback" not in body, body


def test_a_browser_may_send_last_event_id_to_the_stop_and_resume_routes(app_stack: LocalStack) -> None:
    origin = "http://127.0.0.1:8000"  # AllowedOrigins is * by default
    stream_url = app_stack.endpoints()["stream_url"].rstrip("/")
    for method, path in (("POST", "stop"), ("GET", "stream")):
        status, headers, _ = http(
            "OPTIONS",
            f"{stream_url}/v1/conversations/conv_x/{path}",
            None,
            {
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "last-event-id,content-type",
            },
        )
        lower = {k.lower(): v for k, v in headers.items()}
        assert status == 200 and method in lower["access-control-allow-methods"]
        assert "last-event-id" in lower["access-control-allow-headers"].split(",")


def test_a_client_that_stopped_reading_resends_the_part_it_showed_and_goes_on(app_stack: LocalStack) -> None:
    """A plain abort is not a stop: the reply is stored whole; the client resends what it showed and is not stuck."""
    upstream_control(app_stack)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    client = client_for(answer)
    first = client.chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": "one"}])
    whole = first.choices[0].message.content or ""
    shown = whole[:7]  # what the page had shown when it stopped reading
    resend = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": shown},
        {"role": "user", "content": "two"},
    ]
    second = client.chat.completions.create(model="local-echo-1", messages=resend)
    assert second.choices[0].message.content == "Echo (3 messages): two"
    assert provider_messages(app_stack)[-1] == [("user", "one"), ("assistant", whole), ("user", "two")]
    stored = messages_of(app_stack, subject, answer["conversation_id"])
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "one"),
        ("assistant", whole),
        ("user", "two"),
        ("assistant", "Echo (3 messages): two"),
    ]
