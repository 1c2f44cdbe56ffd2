"""Conversation history, rate limits and single-use nonces in one DynamoDB table.

Keys: conversation `CONV#<id>` / `~META` (sorts after its messages, so one descending query returns it
first), messages `CONV#<id>` / `MSG#<seq>`, usage `RATE#<subject>` / `DAY#<date>`, nonces `NONCE#<n>`.
Listing by subject goes through GSI1 (`SUB#<subject>`, `<updated>#<id>`). See docs/adr/0003-table-design.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sigstream.adapters.aws_client import AwsJsonClient, AwsServiceError
from sigstream.core.errors import (
    AlreadyUsedError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
)
from stream_app.adapters.dynamo_values import from_item, to_attr, to_item

META = "~META"
GSI = "GSI1"
MAX_APPEND_ATTEMPTS = 5


@dataclass
class Conversation:
    """The conversation item."""

    id: str
    subject: str
    message_count: int = 0
    title: str = ""
    summary: str | None = None
    created_at: int = 0
    updated_at: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def public(self) -> dict[str, Any]:
        """The API shape."""
        return {
            "id": self.id,
            "object": "conversation",
            "title": self.title,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "message_count": self.message_count,
            "usage": {"prompt_tokens": self.tokens_in, "completion_tokens": self.tokens_out},
        }


def _conversation(item: dict[str, Any]) -> Conversation:
    doc = from_item(item)
    return Conversation(
        id=doc["pk"][5:],
        subject=doc["subject"],
        message_count=doc.get("message_count", 0),
        title=doc.get("title", ""),
        summary=doc.get("summary"),
        created_at=doc.get("created_at", 0),
        updated_at=doc.get("updated_at", 0),
        tokens_in=doc.get("tokens_in", 0),
        tokens_out=doc.get("tokens_out", 0),
    )


def public_message(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored message in the API shape."""
    return {k: v for k, v in doc.items() if k not in ("pk", "sk", "expires_at")} | {"object": "conversation.message"}


def _cursor(key: dict[str, Any] | None) -> str | None:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode() if key else None


def _uncursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(key, dict):
            raise ValueError("cursor")
        return key
    except ValueError as exc:
        raise BadRequestError("after is not a valid cursor", param="after") from exc


class HistoryStore:
    """All of the Stream function's DynamoDB access."""

    def __init__(self, client: AwsJsonClient, table: str, retention_days: int) -> None:
        self.client = client
        self.table = table
        self.retention = retention_days * 86400

    def _call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client.call(operation, {"TableName": self.table, **payload})
        except AwsServiceError as exc:
            if exc.retryable:
                raise ServiceUnavailableError("history storage is temporarily unavailable") from exc
            raise

    def load(self, conversation_id: str, subject: str, limit: int) -> tuple[Conversation, list[dict[str, Any]]]:
        """The conversation (new if absent) and its newest `limit` messages, oldest first: one query."""
        result = self._call(
            "Query",
            {
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": f"CONV#{conversation_id}"}},
                "ScanIndexForward": False,
                "Limit": limit + 1,
                "ConsistentRead": True,
            },
        )
        items = result.get("Items", [])
        if items and from_item({"sk": items[0]["sk"]})["sk"] == META:
            conversation = _conversation(items[0])
            items = items[1:]
        else:
            conversation = Conversation(id=conversation_id, subject=subject)
        if conversation.subject != subject:
            raise NotFoundError("conversation not found", param="conversation_id")  # never reveal others'
        messages = [from_item(i) for i in reversed(items)]
        return conversation, messages

    def get(self, conversation_id: str, subject: str) -> Conversation:
        """The conversation item, if this subject owns it."""
        result = self._call(
            "GetItem", {"Key": to_item({"pk": f"CONV#{conversation_id}", "sk": META}), "ConsistentRead": True}
        )
        if "Item" not in result:
            raise NotFoundError("conversation not found", param="conversation_id")
        conversation = _conversation(result["Item"])
        if conversation.subject != subject:
            raise NotFoundError("conversation not found", param="conversation_id")
        return conversation

    def append_turn(
        self,
        conversation: Conversation,
        messages: list[dict[str, Any]],
        *,
        now: float,
        tokens_in: int,
        tokens_out: int,
    ) -> None:
        """Store a turn's messages contiguously; a concurrent turn makes us re-read and go after it.

        Idempotent: ids are fixed before the first attempt, so a commit whose answer was lost (and whose
        retry then fails its condition) is recognised as ours instead of being written twice.
        """
        messages = [{**m, "id": m.get("id") or "msg_" + uuid.uuid4().hex[:24]} for m in messages]
        for _ in range(MAX_APPEND_ATTEMPTS):
            first = conversation.message_count
            try:
                self._transact_append(conversation, messages, now, tokens_in, tokens_out)
                conversation.message_count = first + len(messages)
                return
            except AwsServiceError as exc:
                if exc.code != "TransactionCanceledException":
                    raise ServiceUnavailableError("could not store the turn") from exc
                reasons = [r.get("Code") for r in exc.body.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" not in reasons:
                    raise ServiceUnavailableError("could not store the turn") from exc
            if self._stored_at(conversation.id, first + 1) == messages[0]["id"]:
                conversation.message_count = first + len(messages)
                return
            conversation.message_count = self.get(conversation.id, conversation.subject).message_count
        raise ConflictError("the conversation is busy; try again")

    def _stored_at(self, conversation_id: str, seq: int) -> str | None:
        """The id of the message stored at a sequence number, if any."""
        key = to_item({"pk": f"CONV#{conversation_id}", "sk": f"MSG#{seq:08d}"})
        item = self._call("GetItem", {"Key": key, "ConsistentRead": True, "ProjectionExpression": "id"}).get("Item")
        return str(from_item(item)["id"]) if item else None

    def _transact_append(
        self, conversation: Conversation, messages: list[dict[str, Any]], now: float, tokens_in: int, tokens_out: int
    ) -> None:
        first = conversation.message_count
        expires = int(now) + self.retention
        created = conversation.created_at or int(now)
        pk = f"CONV#{conversation.id}"
        title = conversation.title or _title(messages)
        updates: dict[str, Any] = {
            ":n": first + len(messages),
            ":expected": first,
            ":sub": conversation.subject,
            ":created": created,
            ":now": int(now),
            ":title": title,
            ":gpk": f"SUB#{conversation.subject}",
            ":gsk": f"{int(now):012d}#{conversation.id}",
            ":exp": expires,
            ":tin": tokens_in,
            ":tout": tokens_out,
            ":zero": 0,
        }
        meta_update = {
            "Update": {
                "TableName": self.table,
                "Key": to_item({"pk": pk, "sk": META}),
                "UpdateExpression": (
                    "SET message_count = :n, subject = :sub, created_at = if_not_exists(created_at, :created), "
                    "updated_at = :now, title = if_not_exists(title, :title), gsi1pk = :gpk, gsi1sk = :gsk, "
                    "expires_at = :exp, tokens_in = if_not_exists(tokens_in, :zero) + :tin, "
                    "tokens_out = if_not_exists(tokens_out, :zero) + :tout"
                ),
                "ConditionExpression": (
                    "(attribute_not_exists(pk) AND :expected = :zero) OR (message_count = :expected AND subject = :sub)"
                ),
                "ExpressionAttributeValues": {k: to_attr(v) for k, v in updates.items()},
            }
        }
        puts: list[dict[str, Any]] = []
        ids: list[str] = []
        for offset, message in enumerate(messages, start=1):
            doc = {"pk": pk, "sk": f"MSG#{first + offset:08d}", "expires_at": expires, **message}
            doc.setdefault("created_at", int(now))
            ids.append(str(doc["id"]))
            puts.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": to_item({k: v for k, v in doc.items() if v is not None}),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        # The token makes a retried commit (after a lost response) succeed instead of writing twice.
        token = hashlib.sha256(f"{pk}:{first}:{ids[0]}".encode()).hexdigest()[:36]
        self.client.call("TransactWriteItems", {"TransactItems": [meta_update, *puts], "ClientRequestToken": token})

    def list_conversations(self, subject: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """The subject's conversations, newest first."""
        payload: dict[str, Any] = {
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :g",
            "ExpressionAttributeValues": {":g": {"S": f"SUB#{subject}"}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        start = _uncursor(cursor)
        if start:
            payload["ExclusiveStartKey"] = start
        result = self._call("Query", payload)
        data = [_conversation(i).public() for i in result.get("Items", [])]
        return _page(data, result.get("LastEvaluatedKey"))

    def list_messages(self, conversation_id: str, subject: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """A conversation's messages, oldest first."""
        self.get(conversation_id, subject)
        payload: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :m)",
            "ExpressionAttributeValues": {":pk": {"S": f"CONV#{conversation_id}"}, ":m": {"S": "MSG#"}},
            "ScanIndexForward": True,
            "Limit": limit,
            "ConsistentRead": True,
        }
        start = _uncursor(cursor)
        if start:
            payload["ExclusiveStartKey"] = start
        result = self._call("Query", payload)
        data = [public_message(from_item(i)) for i in result.get("Items", [])]
        return _page(data, result.get("LastEvaluatedKey"))

    def delete(self, conversation_id: str, subject: str) -> None:
        """Remove a conversation and all its messages."""
        self.get(conversation_id, subject)
        key: dict[str, Any] | None = None
        while True:
            payload: dict[str, Any] = {
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": f"CONV#{conversation_id}"}},
                "ProjectionExpression": "pk, sk",
            }
            if key:
                payload["ExclusiveStartKey"] = key
            result = self._call("Query", payload)
            items = result.get("Items", [])
            for start in range(0, len(items), 25):
                batch = [{"DeleteRequest": {"Key": i}} for i in items[start : start + 25]]
                pending: dict[str, Any] = {self.table: batch}
                while pending:
                    pending = (
                        self.client.call("BatchWriteItem", {"RequestItems": pending}).get("UnprocessedItems") or {}
                    )
            key = result.get("LastEvaluatedKey")
            if not key:
                return

    def check_rate(self, subject: str, now: float, per_minute: int, daily_tokens: int) -> None:
        """Count this request against the subject's minute window and daily token budget (one update)."""
        day = time.strftime("%Y%m%d", time.gmtime(now))
        minute = f"m{int(now) // 60 % 1440:04d}"
        condition = "(attribute_not_exists(#m) OR #m < :limit)"
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":limit": {"N": str(per_minute)},
            ":exp": {"N": str(int(now) + 2 * 86400)},
        }
        if daily_tokens > 0:
            condition += " AND (attribute_not_exists(tokens) OR tokens < :budget)"
            values[":budget"] = {"N": str(daily_tokens)}
        try:
            self.client.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": to_item({"pk": f"RATE#{subject}", "sk": f"DAY#{day}"}),
                    "UpdateExpression": "ADD #m :one SET expires_at = :exp",
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {"#m": minute},
                    "ExpressionAttributeValues": values,
                },
            )
        except AwsServiceError as exc:
            if exc.code == "ConditionalCheckFailedException":
                raise RateLimitedError("rate limit exceeded for this user", retry_after=60 - int(now) % 60) from exc
            if exc.retryable:
                raise ServiceUnavailableError("rate limiting is temporarily unavailable") from exc
            raise

    def add_tokens(self, subject: str, now: float, tokens: int) -> None:
        """Charge a turn's tokens to the subject's daily budget."""
        day = time.strftime("%Y%m%d", time.gmtime(now))
        self._call(
            "UpdateItem",
            {
                "Key": to_item({"pk": f"RATE#{subject}", "sk": f"DAY#{day}"}),
                "UpdateExpression": "ADD tokens :t",
                "ExpressionAttributeValues": {":t": {"N": str(tokens)}},
            },
        )

    def consume_nonce(self, nonce: str, expires: int) -> None:
        """Mark a single-use URL as used; a second use raises AlreadyUsedError."""
        try:
            self.client.call(
                "PutItem",
                {
                    "TableName": self.table,
                    "Item": to_item({"pk": f"NONCE#{nonce}", "sk": "NONCE", "expires_at": expires}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                },
            )
        except AwsServiceError as exc:
            if exc.code == "ConditionalCheckFailedException":
                raise AlreadyUsedError() from exc
            if exc.retryable:
                raise ServiceUnavailableError("single-use check is temporarily unavailable") from exc
            raise


def _title(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])[:80]
    return "New conversation"


def _page(data: list[dict[str, Any]], last_key: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": bool(last_key),
        "next_cursor": _cursor(last_key),
    }
