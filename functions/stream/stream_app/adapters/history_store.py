"""Conversation history, rate limits and single-use nonces in one DynamoDB table.

Keys: conversation `CONV#<id>` / `~META` (sorts after its messages, so one descending query returns it
first), messages `CONV#<id>` / `MSG#<seq>`, usage `RATE#<subject>` (SW1: `SW1APP#<id>`, `SW1URL#<hash>`) /
`DAY#<date>`, nonces `NONCE#<n>`.
Listing by subject goes through GSI1 (`SUB#<subject>`, `<updated>#<id>`). See docs/adr/0003-table-design.md.
"""

from __future__ import annotations

import calendar
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sigstream.adapters.aws_client import AwsJsonClient, AwsServiceError
from sigstream.core.errors import (
    AlreadyUsedError,
    ConflictError,
    NotFoundError,
    PolicyViolationError,
    RateLimitedError,
    ServiceUnavailableError,
)
from stream_app.adapters.dynamo_values import from_item, to_attr, to_item
from stream_app.chat.cursors import (
    conversations_cursor,
    messages_cursor,
    parse_conversations_cursor,
    parse_messages_cursor,
)
from stream_app.chat.messages import Message, message_from_stored

META = "~META"
GSI = "GSI1"
MAX_APPEND_ATTEMPTS = 5
STATUSES = ("complete", "incomplete")
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
HELD_RETRY = 5  # seconds: a budget held only by turns in flight frees up as they finish


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


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _conversation(item: dict[str, Any]) -> Conversation | None:
    """The conversation item's fields, type-checked; None if it is not one of ours."""
    doc = from_item(item)
    pk, subject = doc.get("pk"), doc.get("subject")
    if not isinstance(pk, str) or not pk.startswith("CONV#") or doc.get("sk") != META or not isinstance(subject, str):
        return None
    return Conversation(
        id=pk[5:],
        subject=subject,
        message_count=_number(doc.get("message_count")),
        title=_text(doc.get("title")) or "",
        summary=_text(doc.get("summary")),
        created_at=_number(doc.get("created_at")),
        updated_at=_number(doc.get("updated_at")),
        tokens_in=_number(doc.get("tokens_in")),
        tokens_out=_number(doc.get("tokens_out")),
    )


def clean_usage(usage: Any) -> dict[str, int] | None:
    """The provider's usage, reduced to the integer counts we keep."""
    if not isinstance(usage, dict):
        return None
    kept = {k: v for k in USAGE_FIELDS if isinstance(v := usage.get(k), int) and not isinstance(v, bool)}
    return kept or None


@dataclass
class StoredMessage:
    """A message as the history keeps it: the parsed message plus what the server records about it.

    Items are built from this alone, with the server-owned attributes (keys, id, timestamps, TTL) written
    last, so no field of a client's message can name or overwrite them.
    """

    message: Message
    status: str = "complete"
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    latency_ms: int | None = None
    id: str = field(default_factory=lambda: "msg_" + uuid.uuid4().hex[:24])
    created_at: int = 0

    def attributes(self) -> dict[str, Any]:
        """The non-key attributes (message fields and metadata), without nulls."""
        doc: dict[str, Any] = dict(self.message.to_openai())
        doc.update(
            status=self.status,
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            latency_ms=self.latency_ms,
        )
        return {k: v for k, v in doc.items() if v is not None}

    def public(self) -> dict[str, Any]:
        """The API shape of a stored message."""
        doc = {**self.message.to_openai(), **self.attributes(), "id": self.id, "created_at": self.created_at}
        return doc | {"object": "conversation.message"}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> StoredMessage | None:
        """A stored item, re-validated field by field; None if it is not a valid message of ours."""
        doc = from_item(item)
        message = message_from_stored(doc)
        if message is None or not isinstance(doc.get("id"), str):
            return None
        status = doc.get("status")
        return cls(
            message=message,
            status=status if status in STATUSES else "incomplete",
            finish_reason=_text(doc.get("finish_reason")),
            usage=clean_usage(doc.get("usage")),
            model=_text(doc.get("model")),
            latency_ms=_number(doc.get("latency_ms")) if "latency_ms" in doc else None,
            id=doc["id"],
            created_at=_number(doc.get("created_at")),
        )


@dataclass(frozen=True)
class Reservation:
    """Tokens held against a subject's daily budget until the turn's real usage is known."""

    key: str
    day: str
    tokens: int


def _day(now: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(now))


def _seconds_to_midnight(now: float) -> int:
    year, month, day = time.gmtime(now)[:3]
    return calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0)) + 86400 - int(now)


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

    def load(self, conversation_id: str, subject: str, limit: int) -> tuple[Conversation, list[StoredMessage]]:
        """The conversation (new if absent) and its newest `limit` valid messages, oldest first: one query."""
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
        found = _conversation(items[0]) if items else None
        if found is not None:
            conversation, items = found, items[1:]
        elif items:  # messages without their conversation item: not something we wrote, never ours to read
            raise NotFoundError("conversation not found", param="conversation_id")
        else:
            conversation = Conversation(id=conversation_id, subject=subject)
        if conversation.subject != subject:
            raise NotFoundError("conversation not found", param="conversation_id")  # never reveal others'
        stored = (StoredMessage.from_item(i) for i in reversed(items))
        return conversation, [m for m in stored if m is not None]

    def get(self, conversation_id: str, subject: str) -> Conversation:
        """The conversation item, if this subject owns it."""
        result = self._call(
            "GetItem", {"Key": to_item({"pk": f"CONV#{conversation_id}", "sk": META}), "ConsistentRead": True}
        )
        conversation = _conversation(result["Item"]) if "Item" in result else None
        if conversation is None or conversation.subject != subject:
            raise NotFoundError("conversation not found", param="conversation_id")
        return conversation

    def append_turn(
        self,
        conversation: Conversation,
        messages: list[StoredMessage],
        *,
        now: float,
        tokens_in: int,
        tokens_out: int,
    ) -> None:
        """Store a turn's messages contiguously; a concurrent turn makes us re-read and go after it.

        Idempotent: ids are fixed before the first attempt, so a commit whose answer was lost (and whose
        retry then fails its condition) is recognised as ours instead of being written twice.
        """
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
            if self._stored_at(conversation.id, first + 1) == messages[0].id:
                conversation.message_count = first + len(messages)
                return
            conversation.message_count = self.get(conversation.id, conversation.subject).message_count
        raise ConflictError("the conversation is busy; try again")

    def _stored_at(self, conversation_id: str, seq: int) -> str | None:
        """The id of the message stored at a sequence number, if any."""
        key = to_item({"pk": f"CONV#{conversation_id}", "sk": f"MSG#{seq:08d}"})
        item = self._call("GetItem", {"Key": key, "ConsistentRead": True, "ProjectionExpression": "id"}).get("Item")
        value = from_item(item).get("id") if item else None
        return value if isinstance(value, str) else None

    def _message_item(self, pk: str, seq: int, message: StoredMessage, now: float, expires: int) -> dict[str, Any]:
        """Message attributes first, then the server-owned ones, which therefore always win."""
        doc = {
            **message.attributes(),
            "pk": pk,
            "sk": f"MSG#{seq:08d}",
            "id": message.id,
            "created_at": message.created_at or int(now),
            "expires_at": expires,
        }
        return to_item(doc)

    def _transact_append(
        self, conversation: Conversation, messages: list[StoredMessage], now: float, tokens_in: int, tokens_out: int
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
            # Milliseconds: conversations updated in one second still list newest first. 13 digits sort after
            # the 12-digit seconds of older items ("1..." > "0..."), so the order holds across the change.
            ":gsk": f"{int(now * 1000):013d}#{conversation.id}",
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
        puts = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": self._message_item(pk, first + offset, message, now, expires),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for offset, message in enumerate(messages, start=1)
        ]
        # The token makes a retried commit (after a lost response) succeed instead of writing twice.
        token = hashlib.sha256(f"{pk}:{first}:{messages[0].id}".encode()).hexdigest()[:36]
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
        if cursor:
            position = parse_conversations_cursor(cursor)
            start = {"pk": f"CONV#{position.split('#', 1)[1]}", "sk": META, "gsi1pk": f"SUB#{subject}"}
            payload["ExclusiveStartKey"] = to_item({**start, "gsi1sk": position})
        result = self._call("Query", payload)
        found = (_conversation(i) for i in result.get("Items", []))
        data = [c.public() for c in found if c is not None and c.subject == subject]
        last = result.get("LastEvaluatedKey")
        last_position = from_item(last).get("gsi1sk") if last else None
        next_cursor = conversations_cursor(last_position) if isinstance(last_position, str) else None
        return _page(data, next_cursor)

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
        if cursor:
            sequence = parse_messages_cursor(cursor)
            payload["ExclusiveStartKey"] = to_item({"pk": f"CONV#{conversation_id}", "sk": f"MSG#{sequence:08d}"})
        result = self._call("Query", payload)
        found = (StoredMessage.from_item(i) for i in result.get("Items", []))
        data = [m.public() for m in found if m is not None]
        last = result.get("LastEvaluatedKey")
        sort_key = from_item(last).get("sk") if last else None
        next_cursor = (
            messages_cursor(int(sort_key[4:])) if isinstance(sort_key, str) and sort_key[4:].isdigit() else None
        )
        return _page(data, next_cursor)

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

    def reserve(self, key: str, now: float, per_minute: int, daily_tokens: int, tokens: int) -> Reservation:
        """Count a request against `key`'s minute window and hold `tokens` of its daily budget: one atomic update.

        The condition admits the request only if the minute window has room and the tokens already held or
        spent plus these still fit the budget, so parallel requests can never together overshoot it by
        more than the difference between one turn's reservation and its real usage.
        """
        day = _day(now)
        minute = f"m{int(now) // 60 % 1440:04d}"
        update = "ADD #m :one SET expires_at = :exp"
        condition = "(attribute_not_exists(#m) OR #m < :limit)"
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":limit": {"N": str(per_minute)},
            ":exp": {"N": str(int(now) + 2 * 86400)},
        }
        held = 0
        if daily_tokens > 0:
            if tokens > daily_tokens:
                raise PolicyViolationError(
                    f"this request may use up to {tokens} tokens, more than the daily budget of {daily_tokens}",
                    param="max_tokens",
                )
            held = tokens
            # `tokens` counts spent plus held (what the condition needs); `held` alone tells the two apart.
            update = "ADD #m :one, tokens :r, held :r SET expires_at = :exp"
            condition += " AND (attribute_not_exists(tokens) OR tokens <= :room)"
            values[":r"] = {"N": str(tokens)}
            values[":room"] = {"N": str(daily_tokens - tokens)}
        try:
            self.client.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": to_item({"pk": key, "sk": f"DAY#{day}"}),
                    "UpdateExpression": update,
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {"#m": minute},
                    "ExpressionAttributeValues": values,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
            )
        except AwsServiceError as exc:
            if exc.code == "ConditionalCheckFailedException":
                old = from_item(exc.body["Item"]) if isinstance(exc.body.get("Item"), dict) else {}
                if _number(old.get(minute)) >= per_minute or daily_tokens <= 0:
                    raise RateLimitedError("rate limit exceeded", retry_after=60 - int(now) % 60) from exc
                spent = _number(old.get("tokens")) - _number(old.get("held"))
                if spent + tokens <= daily_tokens:  # only held by turns in flight: room comes back as they settle
                    raise RateLimitedError(
                        "the daily token budget for this user is held by requests in progress", retry_after=HELD_RETRY
                    ) from exc
                raise RateLimitedError(
                    "the daily token budget for this user is used up", retry_after=_seconds_to_midnight(now)
                ) from exc
            if exc.retryable:
                raise ServiceUnavailableError("rate limiting is temporarily unavailable") from exc
            raise
        return Reservation(key, day, held)

    def settle(self, reservation: Reservation, tokens: int) -> None:
        """Replace a reservation by the tokens the turn really used (on the day it was reserved)."""
        if reservation.tokens == 0 and tokens == 0:
            return
        self._call(
            "UpdateItem",
            {
                "Key": to_item({"pk": reservation.key, "sk": f"DAY#{reservation.day}"}),
                "UpdateExpression": "ADD tokens :t, held :h",
                "ExpressionAttributeValues": {
                    ":t": {"N": str(tokens - reservation.tokens)},
                    ":h": {"N": str(-reservation.tokens)},
                },
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


def subject_limit_key(subject: str) -> str:
    """The limiter item of an end user."""
    return f"RATE#{subject}"


def sw1_app_limit_key(app_id: str) -> str:
    """The limiter item of a whole SW1 app (its own key space: no subject can share it)."""
    return f"SW1APP#{app_id}"


def sw1_url_limit_key(signature: str) -> str:
    """The limiter item of one SW1 URL (by its signature's hash)."""
    return "SW1URL#" + hashlib.sha256(signature.encode()).hexdigest()[:32]


def _title(messages: list[StoredMessage]) -> str:
    for stored in messages:
        if stored.message.role == "user" and stored.message.text():
            return stored.message.text()[:80]
    return "New conversation"


def _page(data: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": next_cursor is not None,
        "next_cursor": next_cursor,
    }
