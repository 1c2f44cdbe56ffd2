"""The window (never splitting a tool call from its results), valid provider sequences, and the summary's plan."""

from __future__ import annotations

from typing import Any

from stream_app.chat.messages import Message, parse_message
from stream_app.chat.summary import plan_summary, summary_answer, summary_request
from stream_app.chat.window import provider_sequence, select_window, window_start


def m(doc: dict[str, Any]) -> Message:
    return parse_message(doc, "messages[0]")


def call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


LOOP = [
    m({"role": "user", "content": "q"}),
    m({"role": "assistant", "content": None, "tool_calls": [call("c1"), call("c2")]}),
    m({"role": "tool", "tool_call_id": "c1", "content": "1"}),
    m({"role": "tool", "tool_call_id": "c2", "content": "2"}),
    m({"role": "assistant", "content": "done"}),
]


def test_the_window_never_begins_on_a_tool_result() -> None:
    for size in range(1, len(LOOP) + 1):
        start = window_start(LOOP, max_messages=size, token_budget=10_000)
        assert LOOP[start].role != "tool" if start < len(LOOP) else True
        window = LOOP[start:]
        assert provider_sequence(window) == window  # what the window keeps is already a valid sequence


def test_the_summary_opens_a_window_only_when_something_was_left_out() -> None:
    assert select_window(LOOP, max_messages=10, token_budget=10_000, summary="S")[0].role == "user"
    window = select_window(LOOP, max_messages=1, token_budget=10_000, summary="S")
    assert [x.role for x in window] == ["system", "assistant"] and "S" in str(window[0].content)


def test_unanswered_calls_and_orphan_results_never_reach_the_provider() -> None:
    abandoned = [
        m({"role": "user", "content": "q"}),
        m({"role": "assistant", "content": "let me look", "tool_calls": [call("c1"), call("c2")]}),
        m({"role": "tool", "tool_call_id": "c1", "content": "1"}),
        m({"role": "tool", "tool_call_id": "zz", "content": "orphan"}),
        m({"role": "user", "content": "never mind"}),
    ]
    out = provider_sequence(abandoned)
    assert [(x.role, [c.id for c in x.tool_calls], x.tool_call_id) for x in out] == [
        ("user", [], None),
        ("assistant", ["c1"], None),
        ("tool", [], "c1"),
        ("user", [], None),
    ]


def test_the_summary_takes_only_dropped_messages_it_does_not_cover_yet() -> None:
    history = list(enumerate(LOOP, start=1))
    plan = plan_summary(history, 4, summary="before", summary_through=1)
    assert plan is not None and plan.through == 4 and plan.previous == "before"
    assert [x.role for x in plan.messages] == ["assistant", "tool", "tool"]
    assert plan_summary(history, 4, summary="s", summary_through=4) is None
    assert plan_summary(history, 0, summary=None, summary_through=0) is None
    doc = summary_request(plan, model="m", max_tokens=64, tokens_parameter="max_completion_tokens")
    assert doc["stream"] is False and doc["max_completion_tokens"] == 64 and "before" in doc["messages"][1]["content"]


def test_the_summary_answer_is_read_defensively() -> None:
    answer = {"choices": [{"message": {"content": "  the gist  "}}], "usage": {"total_tokens": 12}}
    assert summary_answer(answer) == ("the gist", 12)
    assert summary_answer({"choices": "nope", "usage": {"total_tokens": True}}) == (None, 0)


def test_a_reply_over_the_budget_stays_out_unless_a_tool_loop_needs_it() -> None:
    huge = m({"role": "assistant", "content": "x " * 50_000})
    history = [m({"role": "user", "content": "q"}), huge]
    assert window_start(history, max_messages=20, token_budget=6000) == 2  # nothing: the summary covers it
    calling = m({"role": "assistant", "content": "x " * 50_000, "tool_calls": [call("c1")]})
    assert window_start([history[0], calling], max_messages=20, token_budget=6000) == 1
