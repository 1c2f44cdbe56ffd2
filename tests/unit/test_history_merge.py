"""History reconciliation (pure): what a conversation request means, given the stored active history."""

from __future__ import annotations

from typing import Any

import pytest

from sigstream.core.errors import ConflictError, HistoryConflictError
from stream_app.chat.history_merge import Entry, merge_history
from stream_app.chat.messages import Message, parse_message


def m(doc: dict[str, Any]) -> Message:
    return parse_message(doc, "messages[0]")


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}


def stored(*docs: dict[str, Any], live_last: bool = False) -> list[Entry]:
    return [Entry(f"msg_{i}", m(doc), live=live_last and i == len(docs) - 1) for i, doc in enumerate(docs)]


def sent(*docs: dict[str, Any]) -> list[Message]:
    return [m(doc) for doc in docs]


def test_an_empty_conversation_takes_everything_as_new() -> None:
    merge = merge_history([], sent({"role": "system", "content": "be brief"}, user("hi")))
    assert merge.kind == "only_new" and len(merge.new) == 2 and merge.base == 0


def test_only_new_messages_are_appended_after_the_history() -> None:
    merge = merge_history(stored(user("a"), assistant("A")), sent(user("b")))
    assert (merge.kind, [x.content for x in merge.new], merge.base) == ("only_new", ["b"], 2)


def test_a_resent_history_keeps_only_its_new_suffix_despite_equivalent_forms() -> None:
    history = stored(user("a"), assistant("A"))
    resend = sent(
        {"role": "user", "content": [{"type": "text", "text": "a"}]},  # one text part equals a string
        {"role": "assistant", "content": "A", "refusal": None, "tool_calls": []},  # openai-python's reply object
        user("b"),
    )
    merge = merge_history(history, resend)
    assert (merge.kind, [x.content for x in merge.new], merge.base) == ("resent", ["b"], 2)


def test_tool_call_arguments_compare_as_json_so_an_ai_sdk_resend_matches() -> None:
    history = stored(user("weather?"), {"role": "assistant", "content": None, "tool_calls": [CALL]})
    spaced = {**CALL, "function": {"name": "get_weather", "arguments": '{ "city": "Paris" }'}}
    resend = sent(
        user("weather?"),
        {"role": "assistant", "content": "", "tool_calls": [spaced]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    )
    merge = merge_history(history, resend)
    assert merge.kind == "resent" and merge.continues_tool_call and [x.role for x in merge.new] == ["tool"]


@pytest.mark.parametrize(
    ("provider", "resent"),
    [
        ('{"days": 2.0, "lat": 48.85}', '{"days":2,"lat":48.85}'),  # JSON.stringify drops a zero fraction
        ('{"n": 1e2, "z": -0.0}', '{"n":100,"z":0}'),
        ('{"id": 12345678901234567890}', '{"id":12345678901234567000}'),  # beyond 2**53: a double, as in JS
    ],
)
def test_tool_call_numbers_compare_as_javascript_reads_them(provider: str, resent: str) -> None:
    call = {**CALL, "function": {"name": "get_weather", "arguments": provider}}
    history = stored(user("weather?"), {"role": "assistant", "content": None, "tool_calls": [call]})
    resend = sent(
        user("weather?"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{**call, "function": {**call["function"], "arguments": resent}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    )
    assert merge_history(history, resend).kind == "resent"


def test_tool_call_numbers_that_differ_in_value_still_conflict() -> None:
    call = {**CALL, "function": {"name": "get_weather", "arguments": '{"days": 2.5}'}}
    history = stored(user("weather?"), {"role": "assistant", "content": None, "tool_calls": [call]})
    other = {**call, "function": {**call["function"], "arguments": '{"days":2}'}}
    with pytest.raises(HistoryConflictError):
        merge_history(
            history, sent(user("weather?"), {"role": "assistant", "content": None, "tool_calls": [other]}, user("x"))
        )


def test_tool_results_alone_continue_a_pending_tool_call() -> None:
    history = stored(user("weather?"), {"role": "assistant", "content": None, "tool_calls": [CALL]})
    merge = merge_history(history, sent({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}))
    assert merge.kind == "only_new" and merge.continues_tool_call


def test_a_tool_result_for_no_pending_call_is_a_conflict_naming_it() -> None:
    with pytest.raises(HistoryConflictError) as caught:
        merge_history(stored(user("a"), assistant("A")), sent({"role": "tool", "tool_call_id": "x", "content": "1"}))
    assert caught.value.param == "messages[0].tool_call_id" and "x" in caught.value.message


def test_the_history_up_to_its_last_user_message_is_a_regenerate() -> None:
    history = stored(user("a"), assistant("A"), user("b"), assistant("B"))
    merge = merge_history(history, sent(user("a"), assistant("A"), user("b")))
    assert (merge.kind, merge.new, merge.base, merge.superseded) == ("regenerate", (), 3, ("msg_3",))


def test_a_regenerate_supersedes_the_whole_reply_block_of_a_tool_loop() -> None:
    history = stored(
        user("weather?"),
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        assistant("It is sunny."),
    )
    merge = merge_history(history, sent(user("weather?")))
    assert merge.kind == "regenerate" and merge.superseded == ("msg_1", "msg_2", "msg_3")


def test_the_history_up_to_a_tool_loops_last_result_regenerates_only_the_reply_after_it() -> None:
    # An SDK retrying a tool loop's last step resends the stored history minus its last assistant reply.
    loop = (user("weather?"), {"role": "assistant", "content": None, "tool_calls": [CALL]})
    result = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    merge = merge_history(stored(*loop, result, assistant("Sunny.")), sent(*loop, result))
    assert (merge.kind, merge.new, merge.base, merge.superseded) == ("regenerate", (), 3, ("msg_3",))
    with pytest.raises(ConflictError):
        merge_history(stored(*loop, result, assistant(""), live_last=True), sent(*loop, result))


def test_the_ambiguous_single_message_equal_to_the_first_is_a_regenerate_only_in_a_one_turn_history() -> None:
    assert merge_history(stored(user("a"), assistant("A")), sent(user("a"))).kind == "regenerate"
    longer = stored(user("a"), assistant("A"), user("b"), assistant("B"))
    merge = merge_history(longer, sent(user("a")))
    assert merge.kind == "only_new" and merge.base == 4  # asked again, not a rewrite of the conversation


def test_a_reply_still_being_written_cannot_be_regenerated() -> None:
    with pytest.raises(ConflictError):
        merge_history(stored(user("a"), assistant(""), live_last=True), sent(user("a")))


def test_a_repeated_system_prompt_is_not_stored_twice() -> None:
    history = stored({"role": "system", "content": "be brief"}, user("a"), assistant("A"))
    merge = merge_history(history, sent({"role": "system", "content": "be brief"}, user("b")))
    assert merge.kind == "only_new" and [x.content for x in merge.new] == ["b"]


@pytest.mark.parametrize(
    ("docs", "param"),
    [
        ((user("a, edited"), assistant("A"), user("b")), "messages[0].content"),
        ((assistant("a"), assistant("A"), user("b")), "messages[0].role"),
        ((user("a"), assistant("not what was said"), user("b")), "messages[1].content"),
        ((user("a"), assistant("A"), user("b"), assistant("invented"), user("c")), "messages[3].content"),
    ],
)
def test_anything_else_is_a_history_conflict_naming_index_and_field(
    docs: tuple[dict[str, Any], ...], param: str
) -> None:
    history = stored(user("a"), assistant("A"), user("b"), assistant("B"))
    with pytest.raises(HistoryConflictError) as caught:
        merge_history(history, sent(*docs))
    assert caught.value.status == 409 and caught.value.code == "history_conflict" and caught.value.param == param


def test_a_resend_that_adds_nothing_is_a_conflict() -> None:
    with pytest.raises(HistoryConflictError, match="adds no new message"):
        merge_history(stored(user("a"), assistant("A")), sent(user("a"), assistant("A")))


def test_with_only_the_newest_messages_read_a_resend_is_refused_not_guessed() -> None:
    history = stored(user("a"), assistant("A"))
    with pytest.raises(HistoryConflictError, match="send only the new messages"):
        merge_history(history, sent(user("a"), assistant("A"), user("b")), complete=False)
    assert merge_history(history, sent(user("b")), complete=False).kind == "only_new"


def test_a_resent_reply_cut_where_the_client_stopped_reading_matches_the_stored_whole() -> None:
    """useChat's stop() without the stop route keeps the text it showed; the stored reply ran on to its end."""
    history = stored({"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello there, friend"})
    for shown in ("Hello th", ""):
        merge = merge_history(
            history,
            sent(
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": shown},
                {"role": "user", "content": "next"},
            ),
        )
        assert merge.kind == "resent" and [x.text() for x in merge.new] == ["next"]
    with pytest.raises(HistoryConflictError) as refused:  # not the start of the stored reply: a real difference
        merge_history(
            history,
            sent(
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello there, foe"},
                {"role": "user", "content": "next"},
            ),
        )
    assert refused.value.param == "messages[1].content"
