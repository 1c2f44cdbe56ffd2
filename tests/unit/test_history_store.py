"""HistoryStore's turn writes: idempotent across lost responses, and going after concurrent turns."""

from __future__ import annotations

from typing import Any

import pytest

from sigstream.adapters.aws_client import AwsServiceError
from sigstream.core.errors import ConflictError
from stream_app.adapters.dynamo_values import to_item
from stream_app.adapters.history_store import Conversation, HistoryStore, StoredMessage
from stream_app.chat.cursors import conversations_cursor, parse_conversations_cursor
from stream_app.chat.messages import Message

CANCELLED = AwsServiceError(
    "TransactionCanceledException", "cancelled", 400, {"CancellationReasons": [{"Code": "ConditionalCheckFailed"}]}
)


class ScriptedClient:
    """A fake DynamoDB client: each operation answers from a script; calls are recorded."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((operation, payload))
        answer = self.script[operation].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if not callable(answer) else answer(payload)


TURN = [StoredMessage(Message("user", "q")), StoredMessage(Message("assistant", "a"))]


def test_a_commit_whose_answer_was_lost_is_not_written_twice() -> None:
    def stored_first_id(payload: dict[str, Any]) -> dict[str, Any]:
        # The first attempt did commit: MSG#00000001 holds the id it was sent with.
        sent = next(p for op, p in client.calls if op == "TransactWriteItems")
        return {"Item": {"id": sent["TransactItems"][1]["Put"]["Item"]["id"]}}

    client = ScriptedClient({"TransactWriteItems": [CANCELLED], "GetItem": [stored_first_id]})
    store = HistoryStore(client, "t", 30)  # type: ignore[arg-type]
    conversation = Conversation("conv_abcdefgh", "s")
    store.append_turn(conversation, TURN, now=1000.0, tokens_in=1, tokens_out=1)
    assert conversation.message_count == 2
    assert [op for op, _ in client.calls] == ["TransactWriteItems", "GetItem"]


def test_a_concurrent_turn_makes_us_append_after_it() -> None:
    meta = {"Item": to_item({"pk": "CONV#conv_abcdefgh", "sk": "~META", "subject": "s", "message_count": 2})}
    client = ScriptedClient(
        {
            "TransactWriteItems": [CANCELLED, {}],
            "GetItem": [{"Item": {"id": {"S": "msg_someone_else"}}}, meta],
        }
    )
    store = HistoryStore(client, "t", 30)  # type: ignore[arg-type]
    conversation = Conversation("conv_abcdefgh", "s")
    store.append_turn(conversation, TURN, now=1000.0, tokens_in=1, tokens_out=1)
    first, second = [p for op, p in client.calls if op == "TransactWriteItems"]
    keys = [item["Put"]["Item"]["sk"]["S"] for item in second["TransactItems"][1:]]
    assert keys == ["MSG#00000003", "MSG#00000004"] and conversation.message_count == 4
    assert first["TransactItems"][1]["Put"]["Item"]["id"] == second["TransactItems"][1]["Put"]["Item"]["id"]


def test_endless_conflicts_end_in_a_409_not_a_loop() -> None:
    meta = {"Item": to_item({"pk": "CONV#c", "sk": "~META", "subject": "s", "message_count": 0})}
    client = ScriptedClient({"TransactWriteItems": [CANCELLED] * 5, "GetItem": [{}, meta] * 5})
    with pytest.raises(ConflictError):
        HistoryStore(client, "t", 30).append_turn(Conversation("c", "s"), TURN, now=0.0, tokens_in=0, tokens_out=0)  # type: ignore[arg-type]


def test_conversations_updated_in_the_same_second_list_newest_first() -> None:
    # The listing's sort key had whole seconds: two conversations of one second listed by id, not by time
    # (test_a_forged_cursor_never_reaches_another_subjects_partition failed about one run in three).
    client = ScriptedClient({"TransactWriteItems": [{}, {}]})
    store = HistoryStore(client, "t", 30)  # type: ignore[arg-type]
    store.append_turn(Conversation("conv_zzzzzzzz", "s"), TURN, now=1000.1, tokens_in=1, tokens_out=1)
    store.append_turn(Conversation("conv_aaaaaaaa", "s"), TURN, now=1000.2, tokens_in=1, tokens_out=1)
    older, newer = (p["TransactItems"][0]["Update"]["ExpressionAttributeValues"][":gsk"]["S"] for _, p in client.calls)
    assert newer > older  # GSI1 is read in descending order: the later update comes first
    assert parse_conversations_cursor(conversations_cursor(newer)) == newer
    assert parse_conversations_cursor(conversations_cursor("000000001000#conv_abcdefgh"))  # cursors from before
