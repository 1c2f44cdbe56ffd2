"""Issue 13 tried as its users and attackers would (an outside tester's round), over the local stack's real sockets.

Each test here failed before the fix committed with it; the ones that held are in test_conversation_turns.py.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from local.stack import LocalStack, StackOptions
from tests.conftest import ROOT
from tests.helpers import http, new_subject, signed_url, sse_text, upstream_control, upstream_requests
from tests.integration.test_conversation_turns import EXAMPLES, LiveStream, client_for, messages_of, node_run, route


def test_ai_sdk_tool_loop_survives_a_model_writing_a_float_argument(app_stack: LocalStack) -> None:
    # Models write `2.0`; the AI SDK resends JSON.stringify(JSON.parse(...)), i.e. `2`: the same call to any reader.
    arguments = '{"city": "Paris", "days": 2.0}'
    upstream_control(app_stack, delay_ms=5, tool_call={"name": "get_weather", "arguments": arguments})
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    out = node_run(EXAMPLES / "usechat" / "tool-loop.mjs", answer, "weather in Paris for two days?")
    assert out["steps"] == 2 and out["text"].startswith("Echo (3 messages)"), out
    steps = [r["body"]["messages"] for r in upstream_requests(app_stack)]
    assert [[m["role"] for m in s] for s in steps] == [["user"], ["user", "assistant", "tool"]]
    stored = messages_of(app_stack, subject, answer["conversation_id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["function"]["arguments"] == arguments  # kept as the provider sent it
    assert json.loads(steps[1][1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris", "days": 2}


@pytest.fixture(scope="module")
def big_budget_stack() -> Iterator[LocalStack]:
    """template.yaml with a daily budget that lets a 450 KB tool call go back to the provider."""
    stack = LocalStack(
        StackOptions(
            root=ROOT,
            template=ROOT / "template.yaml",
            parameters={"DailyTokenBudget": "5000000"},
            log_stream=io.StringIO(),
        )
    )
    stack.start()
    yield stack
    stack.stop()


WRITE_FILE = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}]


def test_a_tool_call_longer_than_a_dynamodb_item_is_stored_and_its_tool_loop_goes_on(
    big_budget_stack: LocalStack,
) -> None:
    app_stack = big_budget_stack
    # A coding agent's write_file call: 450 KB of arguments. The final write used to fail (item over 400 KB), so
    # the reply stayed in_progress, read back incomplete without its call, and the tool result was a 409.
    arguments = json.dumps({"path": "big.txt", "text": "é" * 225_000}, ensure_ascii=False)
    upstream_control(app_stack, tool_call={"name": "write_file", "arguments": arguments})
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    client = client_for(answer)
    stream = client.chat.completions.create(
        model="local-echo-1", messages=[{"role": "user", "content": "write it"}], tools=WRITE_FILE, stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            slot = calls.setdefault(call.index, {"id": "", "arguments": ""})
            slot["id"] = call.id or slot["id"]
            slot["arguments"] += (call.function.arguments or "") if call.function else ""
    assert calls[0]["arguments"] == arguments
    stored = messages_of(app_stack, subject, answer["conversation_id"])
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1]["tool_calls"][0]["function"]["arguments"] == arguments
    result = {"role": "tool", "tool_call_id": calls[0]["id"], "content": "written"}
    reply = client.chat.completions.create(model="local-echo-1", messages=[result], tools=WRITE_FILE)
    assert (reply.choices[0].message.content or "").startswith("Echo (3 messages)")
    sent = [r["body"] for r in upstream_requests(app_stack) if "tools" in r["body"]][-1]["messages"]
    assert [m["role"] for m in sent][-2:] == ["assistant", "tool"]  # the window's budget may leave the question out
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == arguments


def test_an_answer_over_a_megabyte_reads_back_whole_not_cut_at_a_query_page(app_stack: LocalStack) -> None:
    # Its five part items are over the 1 MB a DynamoDB Query answers at once: the rest was silently dropped, and
    # the listing showed 600,598 of 751,500 characters as `complete`.
    long_reply = ("é" * 500 + " ") * 1500  # ~1.5 MB of UTF-8
    upstream_control(app_stack, reply=long_reply)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    stream = client_for(answer).chat.completions.create(
        model="local-echo-1", messages=[{"role": "user", "content": "a very long answer"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == long_reply
    stored = messages_of(app_stack, subject, answer["conversation_id"])
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1]["content"] == long_reply


def test_openai_python_resends_its_history_after_a_long_answer(app_stack: LocalStack) -> None:
    # The answer (~490 KB) is stored in part items; resending it with the history was a 400 "too large to keep in
    # the history", though the turn stores only the new question.
    long_reply = ("lorem ipsum dolor sit amet " * 20 + "\n") * 900
    upstream_control(app_stack, reply=long_reply)
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    client = client_for(answer)
    history: list[Any] = [{"role": "user", "content": "a long answer"}]
    first = client.chat.completions.create(model="local-echo-1", messages=history)
    assert first.choices[0].message.content == long_reply
    upstream_control(app_stack)
    history += [first.choices[0].message, {"role": "user", "content": "thanks"}]
    second = client.chat.completions.create(model="local-echo-1", messages=history)
    assert (second.choices[0].message.content or "").endswith(": thanks")
    stored = messages_of(app_stack, subject, answer["conversation_id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[1]["content"] == long_reply and stored[2]["content"] == "thanks"


def streamed_calls(stream: Any) -> tuple[str, list[dict[str, Any]]]:
    """An openai-python stream's text and tool calls, accumulated as an application does."""
    text, calls = "", dict[int, dict[str, Any]]()
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(
                    call.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )
                slot["id"] = call.id or slot["id"]
                slot["function"]["name"] += call.function.name or ""
                slot["function"]["arguments"] += call.function.arguments or ""
    return text, [calls[i] for i in sorted(calls)]


def test_a_tool_loops_last_step_sent_again_regenerates_its_reply(app_stack: LocalStack) -> None:
    # openai-python (or any SDK retrying a step whose answer it lost) sends the same history again: the stored
    # history minus its last assistant reply, which the issue names a regenerate. It was a 409 history_conflict.
    upstream_control(app_stack, tool_call={"name": "get_weather", "arguments": '{"city":"Paris"}'})
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    client = client_for(answer)
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    history: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    _, calls = streamed_calls(
        client.chat.completions.create(model="local-echo-1", messages=history, tools=tools, stream=True)
    )
    history += [
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
    ]
    for _ in range(2):
        text, _ = streamed_calls(
            client.chat.completions.create(model="local-echo-1", messages=history, tools=tools, stream=True)
        )
        assert text.startswith("Echo (3 messages)")
    steps = [[m["role"] for m in r["body"]["messages"]] for r in upstream_requests(app_stack)]
    assert steps == [["user"], ["user", "assistant", "tool"], ["user", "assistant", "tool"]]
    cid = answer["conversation_id"]
    assert [m["role"] for m in messages_of(app_stack, subject, cid)] == ["user", "assistant", "tool", "assistant"]
    every = messages_of(app_stack, subject, cid, "&include=superseded")
    assert [(m["role"], m["status"]) for m in every][3:] == [("assistant", "superseded"), ("assistant", "complete")]


def resend(url: str, body: bytes, barrier: threading.Barrier, outcomes: list[str]) -> None:
    """One client's POST, started together with another's: the text it got, or its error status and code."""
    barrier.wait()
    status, _, data = http("POST", url, body, {"content-type": "application/json"})
    outcomes.append(sse_text(data) if status == 200 else f"{status} {json.loads(data)['error']['code']}")


def test_two_clients_resending_the_same_history_at_once_store_its_new_message_once(app_stack: LocalStack) -> None:
    # Two tabs (or a double-clicked Send) resend [q1, a1, q2] together. Both merged against [q1, a1]; the second
    # write went after the first turn, storing q2 twice with two answers. A resend's premise (the stored history
    # is what it holds) no longer holds then: it is a 409, before its first byte.
    for _ in range(4):  # the race is a race: several rounds
        upstream_control(app_stack)
        subject = new_subject()
        answer = signed_url(app_stack, subject=subject)
        first = client_for(answer).chat.completions.create(
            model="local-echo-1", messages=[{"role": "user", "content": "q1"}]
        )
        reply = first.choices[0].message.model_dump(exclude_none=True)  # as the SDK's user resends it
        history = [{"role": "user", "content": "q1"}, reply, {"role": "user", "content": "q2"}]
        body = json.dumps({"model": "local-echo-1", "stream": True, "messages": history}).encode()
        upstream_control(app_stack, stall_after=0, stall_seconds=1.0)  # a first token after the first write
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        threads = [threading.Thread(target=resend, args=(answer["url"], body, barrier, outcomes)) for _ in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(o[:4] for o in outcomes) == ["409 ", "Echo"], outcomes
        stored = messages_of(app_stack, subject, answer["conversation_id"])
        assert [(m["role"], m.get("content")) for m in stored][:3] == [
            ("user", "q1"),
            ("assistant", "Echo (1 messages): q1"),
            ("user", "q2"),
        ]
        assert len(stored) == 4 and stored[3]["status"] == "complete"


def test_a_stop_just_before_the_end_stores_what_the_page_had_shown(app_stack: LocalStack) -> None:
    # The watcher looks for a stop once a second; a Stop in the last second of an answer was answered
    # {"stopped": true} while the turn stored the whole reply `complete`: text the user never saw.
    words = " ".join(f"w{i}" for i in range(10))
    outcomes = []
    for lag in (0.05, 0.15, 0.25):
        upstream_control(app_stack, reply=words, delay_ms=100)
        subject = new_subject()
        answer = signed_url(app_stack, subject=subject)
        cid = answer["conversation_id"]
        live = LiveStream(answer["url"], [{"role": "user", "content": "count"}])
        live.wait_for_text(len("w0 w1 w2 w3 w4 w5 w6 w7 w8"))
        time.sleep(lag)
        shown = sse_text(live.body)
        position = len(shown)
        stop = route(app_stack, subject, "POST", f"/v1/conversations/{cid}/stop")
        status, _, body = http("POST", stop, b"", {"last-event-id": str(position)})
        assert status == 200, body
        live.finish()
        doc = json.loads(body)
        stored = messages_of(app_stack, subject, cid)[1]
        outcomes.append((doc["stopped"], stored["status"]))
        if doc["stopped"]:  # asked in time: what the page showed is what the history holds
            assert (stored["status"], stored["content"]) == ("stopped", shown[:position]), (lag, stored)
            assert doc["message"]["status"] == "stopped"
        else:  # the turn had ended first
            assert stored["status"] == "complete" and doc["message"] is None
    assert any(stopped for stopped, _ in outcomes), outcomes
