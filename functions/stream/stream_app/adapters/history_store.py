"""Conversation history, rate limits and single-use nonces in one DynamoDB table.

Keys: conversation `CONV#<id>` / `~META` (sorts after its messages, so one descending query returns it
first), messages `CONV#<id>` / `MSG#<seq>` (a reply longer than one item continues in `MSG#<seq>.<n>`),
usage `RATE#<subject>` (SW1: `SW1APP#<id>`, `SW1URL#<hash>`) / `DAY#<date>`, nonces `NONCE#<n>`.
Listing by subject goes through GSI1 (`SUB#<subject>`, `<updated>#<id>`). See docs/adr/0003-table-design.md
and, for a turn's life (in progress, checkpoints, stop, final write), docs/adr/0009-conversation-turns.md.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import time
import uuid
from collections.abc import Sequence
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
IN_PROGRESS = "in_progress"
SUPERSEDED = "superseded"
STATUSES = ("complete", "incomplete", IN_PROGRESS, "stopped", SUPERSEDED)
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
HELD_RETRY = 5  # seconds: a budget held only by turns in flight frees up as they finish
# A message item is at most 400 KB: a reply's text beyond this many UTF-8 bytes continues in part items
# (`MSG#<seq>.<n>`), written with the final transaction (at most 4 MB, so at most MAX_PARTS parts).
ITEM_TEXT_BYTES = 300_000
MAX_PARTS = 12
RECENT_MESSAGES = 8  # how far back the stop and resume routes look for a reply in progress
MAX_HISTORY_PAGES = 4
_PART_KEY = re.compile(r"MSG#([0-9]{8})\.([0-9]{3})")


@dataclass
class Conversation:
    """The conversation item."""

    id: str
    subject: str
    message_count: int = 0  # the last sequence number given out (rolled-back turns leave a gap)
    title: str = ""
    summary: str | None = None
    summary_through: int = 0  # the sequence number of the last message the summary covers
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


def _optional_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
        summary_through=_number(doc.get("summary_through")),
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


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _seq(doc: dict[str, Any]) -> int:
    """A message item's sequence number, from its sort key."""
    sort_key = doc.get("sk")
    return int(sort_key[4:12]) if isinstance(sort_key, str) and sort_key[4:12].isdigit() else 0


def split_text(text: str, size: int = ITEM_TEXT_BYTES) -> list[str]:
    """Text cut into pieces of at most `size` UTF-8 bytes, never inside a character."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= size:
        return [text]
    pieces, start = [], 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: back to the character's start
            end -= 1
        pieces.append(data[start:end].decode("utf-8", "surrogatepass"))
        start = end
    return pieces


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
    seq: int = 0
    lease_until: int | None = None  # in progress: readers treat the reply as incomplete after this (epoch s)
    stop_requested: int | None = None  # when POST .../stop asked the turn to stop (epoch s)
    stop_at: int | None = None  # the event id the stopping client had read: the reply keeps that much text
    superseded_by: str | None = None  # the id of the reply that replaced this one (a regenerate)

    def attributes(self) -> dict[str, Any]:
        """The non-key attributes (message fields and metadata), without nulls."""
        doc: dict[str, Any] = dict(self.message.to_openai())
        doc.update(
            status=self.status,
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            latency_ms=self.latency_ms,
            lease_until=self.lease_until,
            superseded_by=self.superseded_by,
        )
        return {k: v for k, v in doc.items() if v is not None}

    def live(self, now: float) -> bool:
        """Whether a turn is still writing this reply (in progress, lease not run out)."""
        return self.status == IN_PROGRESS and (self.lease_until or 0) >= now

    def effective_status(self, now: float | None) -> str:
        """The status a reader should see: a reply whose turn died while writing it is incomplete."""
        if self.status == IN_PROGRESS and now is not None and not self.live(now):
            return "incomplete"
        return self.status

    def public(self, now: float | None = None) -> dict[str, Any]:
        """The API shape of a stored message."""
        doc = {**self.message.to_openai(), **self.attributes(), "id": self.id, "created_at": self.created_at}
        doc.pop("lease_until", None)
        doc["status"] = self.effective_status(now)
        return doc | {"object": "conversation.message"}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> StoredMessage | None:
        """A stored item, re-validated field by field; None if it is not a valid message of ours."""
        return cls.from_doc(from_item(item))

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> StoredMessage | None:
        """A stored item's plain values, re-validated field by field (None if not a valid message of ours)."""
        message = message_from_stored(doc)
        if message is None or not isinstance(doc.get("id"), str):
            return None
        status = doc.get("status")
        seq = _seq(doc)
        return cls(
            message=message,
            status=status if status in STATUSES else "incomplete",
            finish_reason=_text(doc.get("finish_reason")),
            usage=clean_usage(doc.get("usage")),
            model=_text(doc.get("model")),
            latency_ms=_number(doc.get("latency_ms")) if "latency_ms" in doc else None,
            id=doc["id"],
            created_at=_number(doc.get("created_at")),
            seq=seq,
            lease_until=_optional_number(doc.get("lease_until")),
            stop_requested=_optional_number(doc.get("stop_requested")),
            stop_at=_optional_number(doc.get("stop_at")),
            superseded_by=_text(doc.get("superseded_by")),
        )


@dataclass(frozen=True)
class History:
    """A conversation and its newest messages (oldest first, superseded ones included)."""

    conversation: Conversation
    messages: list[StoredMessage]
    complete: bool  # every message of the conversation was read

    def active(self) -> list[StoredMessage]:
        """The conversation as it goes on: superseded replies left out."""
        return [m for m in self.messages if m.status != SUPERSEDED]


@dataclass(frozen=True)
class StopSignal:
    """Why a reply in progress must end now: a stop request (keeping `stop_at` characters), or it is gone."""

    stop_at: int | None = None
    gone: bool = False  # the reply is no longer in progress (the conversation was deleted, or it was replaced)


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


def _cancel_reasons(exc: AwsServiceError) -> list[str | None]:
    return [r.get("Code") for r in exc.body.get("CancellationReasons", [])]


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

    # --- reading -------------------------------------------------------------------------------------------

    def _assemble(self, pk: str, items: list[dict[str, Any]]) -> list[StoredMessage]:
        """Message items (in the order given) as messages, each long reply joined with its part items."""
        parts: dict[int, dict[int, str]] = {}
        docs: list[dict[str, Any]] = []
        for item in items:
            doc = from_item(item)
            sort_key = doc.get("sk")
            found = _PART_KEY.fullmatch(sort_key) if isinstance(sort_key, str) else None
            if found:
                text = doc.get("text")
                if isinstance(text, str):
                    parts.setdefault(int(found.group(1)), {})[int(found.group(2))] = text
                continue
            docs.append(doc)
        out = []
        for doc in docs:
            count, calls = _number(doc.get("parts")), _number(doc.get("call_parts"))
            if count or calls:
                seq = _seq(doc)
                found_parts = parts.get(seq, {})
                if len(found_parts) < count + calls:
                    found_parts = self._parts(pk, seq)
                if count and isinstance(doc.get("content"), str):
                    doc["content"] += "".join(found_parts.get(i, "") for i in range(1, count + 1))
                if calls:
                    calls_text = "".join(found_parts.get(i, "") for i in range(count + 1, count + calls + 1))
                    try:
                        doc["tool_calls"] = json.loads(calls_text)
                    except ValueError:
                        doc["tool_calls"] = None  # a part is missing: the message does not parse, so it is not read
            stored = StoredMessage.from_doc(doc)
            if stored is not None:
                out.append(stored)
        return out

    def _parts(self, pk: str, seq: int) -> dict[int, str]:
        """A long reply's part items (when a page of results did not hold them all)."""
        payload: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":p": {"S": f"MSG#{seq:08d}."}},
            "ConsistentRead": True,
        }
        found: dict[int, str] = {}
        for _ in range(MAX_PARTS):  # a Query answers at most 1 MB: three or more parts take more than one page
            result = self._call("Query", payload)
            for item in result.get("Items", []):
                doc = from_item(item)
                key = _PART_KEY.fullmatch(str(doc.get("sk")))
                if key and isinstance(doc.get("text"), str):
                    found[int(key.group(2))] = doc["text"]
            if "LastEvaluatedKey" not in result:
                break
            payload["ExclusiveStartKey"] = result["LastEvaluatedKey"]
        return found

    def load_history(self, conversation_id: str, subject: str, want: int) -> History:
        """The conversation (new if absent) and at least its newest `want` active messages (when there are).

        Descending from the conversation item: the first page is one query; superseded replies and long
        replies' parts take places in a page, so more pages follow (at most MAX_HISTORY_PAGES) until `want`
        active messages are read or the history is exhausted.
        """
        pk = f"CONV#{conversation_id}"
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        active = 0
        complete = False
        for page in range(MAX_HISTORY_PAGES):
            payload: dict[str, Any] = {
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": pk}},
                "ScanIndexForward": False,
                "Limit": want + 1 if page == 0 else max(want - active, 1) + 8,
                "ConsistentRead": True,
            }
            if start:
                payload["ExclusiveStartKey"] = start
            result = self._call("Query", payload)
            page_items = result.get("Items", [])
            items += page_items
            active += sum(
                1
                for i in page_items
                if i.get("sk", {}).get("S", "").startswith("MSG#")
                and not _PART_KEY.fullmatch(i["sk"]["S"])
                and i.get("status", {}).get("S") != SUPERSEDED
            )
            start = result.get("LastEvaluatedKey")
            if not start:
                complete = True
                break
            if active >= want:
                break
        found = _conversation(items[0]) if items else None
        if found is not None:
            conversation, items = found, items[1:]
        elif items:  # messages without their conversation item: not something we wrote, never ours to read
            raise NotFoundError("conversation not found", param="conversation_id")
        else:
            conversation = Conversation(id=conversation_id, subject=subject)
        if conversation.subject != subject:
            raise NotFoundError("conversation not found", param="conversation_id")  # never reveal others'
        messages = self._assemble(pk, items)
        messages.reverse()
        return History(conversation, messages, complete)

    def load(self, conversation_id: str, subject: str, limit: int) -> tuple[Conversation, list[StoredMessage]]:
        """The conversation (new if absent) and its newest `limit` valid messages, oldest first."""
        history = self.load_history(conversation_id, subject, limit)
        return history.conversation, history.messages[-limit:] if limit else []

    def get(self, conversation_id: str, subject: str) -> Conversation:
        """The conversation item, if this subject owns it."""
        result = self._call(
            "GetItem", {"Key": to_item({"pk": f"CONV#{conversation_id}", "sk": META}), "ConsistentRead": True}
        )
        conversation = _conversation(result["Item"]) if "Item" in result else None
        if conversation is None or conversation.subject != subject:
            raise NotFoundError("conversation not found", param="conversation_id")
        return conversation

    def recent(self, conversation_id: str, subject: str) -> tuple[Conversation, list[StoredMessage]]:
        """The conversation this subject owns and its newest few messages, newest first (one query)."""
        pk = f"CONV#{conversation_id}"
        result = self._call(
            "Query",
            {
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": pk}},
                "ScanIndexForward": False,
                "Limit": RECENT_MESSAGES + 1,
                "ConsistentRead": True,
            },
        )
        items = result.get("Items", [])
        conversation = _conversation(items[0]) if items else None
        if conversation is None or conversation.subject != subject:
            raise NotFoundError("conversation not found", param="conversation_id")
        return conversation, self._assemble(pk, items[1:])

    def latest_live(self, conversation_id: str, subject: str, now: float) -> StoredMessage | None:
        """The newest reply a turn is still writing, if any."""
        _, messages = self.recent(conversation_id, subject)
        return next((m for m in messages if m.live(now)), None)

    def message_at(self, conversation_id: str, seq: int) -> StoredMessage | None:
        """The message stored at a sequence number (a long reply with its parts)."""
        pk = f"CONV#{conversation_id}"
        item = self._call("GetItem", {"Key": to_item({"pk": pk, "sk": f"MSG#{seq:08d}"}), "ConsistentRead": True}).get(
            "Item"
        )
        return next(iter(self._assemble(pk, [item])), None) if item else None

    # --- a turn's writes ------------------------------------------------------------------------------------

    def append_turn(
        self,
        conversation: Conversation,
        messages: list[StoredMessage],
        *,
        now: float,
        tokens_in: int,
        tokens_out: int,
        superseded: Sequence[StoredMessage] = (),
        follow: bool = True,
    ) -> None:
        """Store a turn's messages contiguously after the last one, and mark the replies it supersedes.

        When a concurrent turn got there first we re-read and go after it (`follow`), else ConflictError.
        Idempotent: ids are fixed before the first attempt, so a commit whose answer was lost (and whose
        retry then fails its condition) is recognised as ours instead of being written twice. Each message's
        `seq` is set.
        """
        for _ in range(MAX_APPEND_ATTEMPTS):
            first = conversation.message_count
            try:
                self._transact_append(conversation, messages, now, tokens_in, tokens_out, superseded)
                self._numbered(conversation, messages, first)
                return
            except AwsServiceError as exc:
                if exc.code != "TransactionCanceledException":
                    raise ServiceUnavailableError("could not store the turn") from exc
                reasons = _cancel_reasons(exc)
                if "ConditionalCheckFailed" not in reasons:
                    raise ServiceUnavailableError("could not store the turn") from exc
                if any(r == "ConditionalCheckFailed" for r in reasons[1 + len(messages) :]):
                    raise ConflictError("the reply to regenerate was changed meanwhile; try again") from exc
            if self._stored_at(conversation.id, first + 1) == messages[0].id:
                self._numbered(conversation, messages, first)
                return
            if not follow:
                raise ConflictError("another turn was stored meanwhile; read the history and try again")
            conversation.message_count = self.get(conversation.id, conversation.subject).message_count
        raise ConflictError("the conversation is busy; try again")

    @staticmethod
    def _numbered(conversation: Conversation, messages: list[StoredMessage], first: int) -> None:
        for offset, message in enumerate(messages, start=1):
            message.seq = first + offset
        conversation.message_count = first + len(messages)

    def _stored_at(self, conversation_id: str, seq: int) -> str | None:
        """The id of the message stored at a sequence number, if any."""
        key = to_item({"pk": f"CONV#{conversation_id}", "sk": f"MSG#{seq:08d}"})
        item = self._call("GetItem", {"Key": key, "ConsistentRead": True, "ProjectionExpression": "id"}).get("Item")
        value = from_item(item).get("id") if item else None
        return value if isinstance(value, str) else None

    def _message_items(
        self, pk: str, seq: int, message: StoredMessage, now: float, expires: int
    ) -> list[dict[str, Any]]:
        """The message's item, then its part items when its text is longer than one item holds."""
        doc = message.attributes()
        content = doc.get("content")
        pieces = split_text(content) if isinstance(content, str) else [content]
        call_pieces: list[str] = []
        if doc.get("tool_calls"):
            # A tool call's arguments can be long too (a coding agent writing a file): beside the text they would
            # make the item too large to write, so they continue in part items after the text's.
            calls_text = json.dumps(doc["tool_calls"], separators=(",", ":"), ensure_ascii=False)
            first = pieces[0] if isinstance(pieces[0], str) else ""
            spilled = split_text(calls_text)
            if _utf8_size(calls_text) + _utf8_size(first) > ITEM_TEXT_BYTES and len(spilled) <= MAX_PARTS:
                call_pieces = spilled
                del doc["tool_calls"]
                doc["call_parts"] = len(call_pieces)
        pieces = pieces[: MAX_PARTS + 1 - len(call_pieces)]
        if len(pieces) > 1:
            doc["content"], doc["parts"] = pieces[0], len(pieces) - 1
        pieces += call_pieces
        server = {"pk": pk, "sk": f"MSG#{seq:08d}", "id": message.id, "created_at": message.created_at or int(now)}
        items = [to_item({**doc, **server, "expires_at": expires})]  # server-owned attributes last: they win
        for index, piece in enumerate(pieces[1:], start=1):
            items.append(to_item({"pk": pk, "sk": f"MSG#{seq:08d}.{index:03d}", "text": piece, "expires_at": expires}))
        return items

    def _message_item(self, pk: str, seq: int, message: StoredMessage, now: float, expires: int) -> dict[str, Any]:
        """Message attributes first, then the server-owned ones, which therefore always win."""
        return self._message_items(pk, seq, message, now, expires)[0]

    def _transact_append(
        self,
        conversation: Conversation,
        messages: list[StoredMessage],
        now: float,
        tokens_in: int,
        tokens_out: int,
        superseded: Sequence[StoredMessage] = (),
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
        puts = []
        for offset, message in enumerate(messages, start=1):
            items = self._message_items(pk, first + offset, message, now, expires)
            puts.append(
                {"Put": {"TableName": self.table, "Item": items[0], "ConditionExpression": "attribute_not_exists(pk)"}}
            )
            puts += [{"Put": {"TableName": self.table, "Item": part}} for part in items[1:]]
        reply_id = messages[-1].id
        marks = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": to_item({"pk": pk, "sk": f"MSG#{old.seq:08d}"}),
                    "UpdateExpression": "SET #s = :sup, superseded_by = :by",
                    "ConditionExpression": "id = :id AND #s <> :sup AND #s <> :live",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": to_item(
                        {":sup": SUPERSEDED, ":by": reply_id, ":id": old.id, ":live": IN_PROGRESS}
                    ),
                }
            }
            for old in superseded
            if old.status != IN_PROGRESS  # a dead turn's reply: no condition on its status
        ] + [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": to_item({"pk": pk, "sk": f"MSG#{old.seq:08d}"}),
                    "UpdateExpression": "SET #s = :sup, superseded_by = :by",
                    "ConditionExpression": "id = :id AND #s <> :sup",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": to_item({":sup": SUPERSEDED, ":by": reply_id, ":id": old.id}),
                }
            }
            for old in superseded
            if old.status == IN_PROGRESS
        ]
        # The token makes a retried commit (after a lost response) succeed instead of writing twice.
        token = hashlib.sha256(f"{pk}:{first}:{messages[0].id}".encode()).hexdigest()[:36]
        self.client.call(
            "TransactWriteItems", {"TransactItems": [meta_update, *puts, *marks], "ClientRequestToken": token}
        )

    def finish_turn(
        self,
        conversation: Conversation,
        reply: StoredMessage,
        *,
        now: float,
        tokens_in: int,
        tokens_out: int,
        honour_stop: bool = False,
    ) -> StopSignal | None:
        """The final write of a reply stored in progress: its whole item (and parts), and the conversation's totals.

        Conditional on the reply still being in progress: a conversation deleted (or a reply superseded) while the
        turn ran is not brought back. One transaction, so the reply and the totals never disagree. With
        `honour_stop`, also on no stop having been asked for: when one was (after the watcher's last look), nothing
        is written and its signal is returned, so the turn stores the reply as the stopping client saw it.
        """
        pk = f"CONV#{conversation.id}"
        expires = int(now) + self.retention
        items = self._message_items(pk, reply.seq, reply, now, expires)
        values = {
            ":sub": conversation.subject,
            ":now": int(now),
            ":gsk": f"{int(now * 1000):013d}#{conversation.id}",
            ":exp": expires,
            ":tin": tokens_in,
            ":tout": tokens_out,
            ":zero": 0,
        }
        transaction = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": items[0],
                    "ConditionExpression": "id = :id AND #s = :live"
                    + (" AND attribute_not_exists(stop_requested)" if honour_stop else ""),
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": to_item({":id": reply.id, ":live": IN_PROGRESS}),
                }
            },
            *({"Put": {"TableName": self.table, "Item": part}} for part in items[1:]),
            {
                "Update": {
                    "TableName": self.table,
                    "Key": to_item({"pk": pk, "sk": META}),
                    "UpdateExpression": (
                        "SET updated_at = :now, gsi1sk = :gsk, expires_at = :exp, "
                        "tokens_in = if_not_exists(tokens_in, :zero) + :tin, "
                        "tokens_out = if_not_exists(tokens_out, :zero) + :tout"
                    ),
                    "ConditionExpression": "subject = :sub",
                    "ExpressionAttributeValues": {k: to_attr(v) for k, v in values.items()},
                }
            },
        ]
        token = hashlib.sha256(f"{pk}:{reply.seq}:{reply.id}:final".encode()).hexdigest()[:36]
        try:
            self.client.call("TransactWriteItems", {"TransactItems": transaction, "ClientRequestToken": token})
        except AwsServiceError as exc:
            if exc.code == "TransactionCanceledException" and "ConditionalCheckFailed" in _cancel_reasons(exc):
                signal = self.stop_signal(conversation.id, reply) if honour_stop else None
                if signal is not None and not signal.gone:
                    return signal
                raise ConflictError("the reply is no longer in progress (deleted or replaced)") from exc
            raise ServiceUnavailableError("could not store the reply") from exc
        return None

    def rollback_turn(
        self, conversation: Conversation, messages: list[StoredMessage], superseded: Sequence[StoredMessage] = ()
    ) -> None:
        """Undo a turn stored in progress whose provider call failed before any answer (the client saw an error).

        Its messages are deleted and the replies it superseded restored; the sequence number goes back when no
        turn came after it (and a conversation that held nothing else goes away). Best effort, like the rest
        of a failed turn: a reply left in progress runs out its lease and reads as incomplete.
        """
        pk = f"CONV#{conversation.id}"
        first = min(m.seq for m in messages) - 1
        deletes = [
            {
                "Delete": {
                    "TableName": self.table,
                    "Key": to_item({"pk": pk, "sk": f"MSG#{m.seq:08d}"}),
                    "ConditionExpression": "id = :id",
                    "ExpressionAttributeValues": to_item({":id": m.id}),
                }
            }
            for m in messages
        ]
        restores = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": to_item({"pk": pk, "sk": f"MSG#{old.seq:08d}"}),
                    "UpdateExpression": "SET #s = :old REMOVE superseded_by",
                    "ConditionExpression": "superseded_by = :by",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": to_item({":old": old.status, ":by": messages[-1].id}),
                }
            }
            for old in superseded
        ]
        values = to_item({":end": conversation.message_count, ":first": first, ":sub": conversation.subject})
        meta: dict[str, Any] = {
            "TableName": self.table,
            "Key": to_item({"pk": pk, "sk": META}),
            "ConditionExpression": "message_count = :end AND subject = :sub",
        }
        if first == 0:
            meta_op = {"Delete": {**meta, "ExpressionAttributeValues": {k: values[k] for k in (":end", ":sub")}}}
        else:
            meta_op = {
                "Update": {
                    **meta,
                    "UpdateExpression": "SET message_count = :first",
                    "ExpressionAttributeValues": values,
                }
            }
        for transaction in ([meta_op, *deletes, *restores], [*deletes, *restores]):
            try:
                self.client.call("TransactWriteItems", {"TransactItems": transaction})
            except AwsServiceError as exc:
                reasons = _cancel_reasons(exc)
                if transaction[0] is meta_op and reasons and reasons[0] == "ConditionalCheckFailed":
                    continue  # a turn came after ours: leave the number, delete the messages only
                raise ServiceUnavailableError("could not undo the turn") from exc
            conversation.message_count = first if transaction[0] is meta_op else conversation.message_count
            return

    def checkpoint(self, conversation_id: str, reply: StoredMessage, text: str, lease_until: int) -> StopSignal | None:
        """Write the reply's text so far, unless a stop was requested (then say so): one conditional update.

        Only the first item's worth of text is checkpointed (the final write stores the rest in parts).
        """
        try:
            self._call(
                "UpdateItem",
                {
                    "Key": to_item({"pk": f"CONV#{conversation_id}", "sk": f"MSG#{reply.seq:08d}"}),
                    "UpdateExpression": "SET content = :t, lease_until = :l",
                    "ConditionExpression": "id = :id AND #s = :live AND attribute_not_exists(stop_requested)",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": to_item(
                        {":t": split_text(text)[0], ":l": lease_until, ":id": reply.id, ":live": IN_PROGRESS}
                    ),
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
            )
        except AwsServiceError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            return _stop_signal(from_item(exc.body["Item"]) if isinstance(exc.body.get("Item"), dict) else {})
        return None

    def stop_signal(self, conversation_id: str, reply: StoredMessage) -> StopSignal | None:
        """Whether the reply was asked to stop (or is gone): one small consistent read."""
        item = self._call(
            "GetItem",
            {
                "Key": to_item({"pk": f"CONV#{conversation_id}", "sk": f"MSG#{reply.seq:08d}"}),
                "ConsistentRead": True,
                "ProjectionExpression": "id, #s, stop_requested, stop_at",
                "ExpressionAttributeNames": {"#s": "status"},
            },
        ).get("Item")
        doc = from_item(item) if item else {}
        if doc.get("id") == reply.id and doc.get("status") == IN_PROGRESS and "stop_requested" not in doc:
            return None
        return _stop_signal(doc if doc.get("id") == reply.id else {})

    def renew_lease(self, conversation_id: str, reply: StoredMessage, lease_until: int) -> None:
        """Keep a reply in progress while the provider is silent (no checkpoint renews it)."""
        try:
            self._call(
                "UpdateItem",
                {
                    "Key": to_item({"pk": f"CONV#{conversation_id}", "sk": f"MSG#{reply.seq:08d}"}),
                    "UpdateExpression": "SET lease_until = :l",
                    "ConditionExpression": "id = :id AND #s = :live",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": to_item({":l": lease_until, ":id": reply.id, ":live": IN_PROGRESS}),
                },
            )
        except AwsServiceError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise

    def request_stop(
        self, conversation_id: str, subject: str, *, now: float, stop_at: int | None
    ) -> list[StoredMessage]:
        """Ask every reply of the conversation still in progress to stop; returns them (none: nothing to stop)."""
        _, recent = self.recent(conversation_id, subject)
        live = [m for m in recent if m.live(now)]
        for reply in live:
            values: dict[str, Any] = {":now": int(now), ":id": reply.id, ":live": IN_PROGRESS}
            update = "SET stop_requested = :now"
            if stop_at is not None:
                update += ", stop_at = :at"
                values[":at"] = stop_at
            try:
                self._call(
                    "UpdateItem",
                    {
                        "Key": to_item({"pk": f"CONV#{conversation_id}", "sk": f"MSG#{reply.seq:08d}"}),
                        "UpdateExpression": update,
                        "ConditionExpression": "id = :id AND #s = :live AND attribute_not_exists(stop_requested)",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": to_item(values),
                    },
                )
            except AwsServiceError as exc:
                if exc.code != "ConditionalCheckFailedException":  # finished meanwhile, or already asked
                    raise
        return live

    def save_summary(self, conversation: Conversation, summary: str, through: int, now: float) -> None:
        """Keep the rolling summary of the messages up to `through` (never replacing a newer one)."""
        try:
            self._call(
                "UpdateItem",
                {
                    "Key": to_item({"pk": f"CONV#{conversation.id}", "sk": META}),
                    "UpdateExpression": "SET summary = :s, summary_through = :t, summarized_at = :now",
                    "ConditionExpression": (
                        "subject = :sub AND (attribute_not_exists(summary_through) OR summary_through < :t)"
                    ),
                    "ExpressionAttributeValues": to_item(
                        {":s": summary, ":t": through, ":now": int(now), ":sub": conversation.subject}
                    ),
                },
            )
        except AwsServiceError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
        conversation.summary, conversation.summary_through = summary, through

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

    def list_messages(
        self,
        conversation_id: str,
        subject: str,
        limit: int,
        cursor: str | None,
        *,
        now: float | None = None,
        include_superseded: bool = False,
    ) -> dict[str, Any]:
        """A conversation's messages, oldest first (superseded replies only when asked for)."""
        self.get(conversation_id, subject)
        pk = f"CONV#{conversation_id}"
        payload: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :m)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":m": {"S": "MSG#"}},
            "ScanIndexForward": True,
            "Limit": limit,
            "ConsistentRead": True,
        }
        if cursor:
            sequence = parse_messages_cursor(cursor)
            # After the message and any part items of it.
            payload["ExclusiveStartKey"] = to_item({"pk": pk, "sk": f"MSG#{sequence:08d}.~"})
        result = self._call("Query", payload)
        found = self._assemble(pk, result.get("Items", []))
        data = [m.public(now) for m in found if include_superseded or m.status != SUPERSEDED]
        last = result.get("LastEvaluatedKey")
        sort_key = from_item(last).get("sk") if last else None
        digits = sort_key[4:12] if isinstance(sort_key, str) else ""
        next_cursor = messages_cursor(int(digits)) if digits.isdigit() and len(digits) == 8 else None
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

        The update records a claim of this call, and the condition refuses that claim a second time: when an
        attempt's answer is lost after DynamoDB applied it, the client's retry is not counted and held again
        (tokens held for the rest of the day that no settlement ever gives back).
        """
        day = _day(now)
        minute = f"m{int(now) // 60 % 1440:04d}"
        claim = uuid.uuid4().hex
        update = "ADD #m :one SET expires_at = :exp, last_claim = :claim"
        condition = (
            "(attribute_not_exists(last_claim) OR last_claim <> :claim) AND (attribute_not_exists(#m) OR #m < :limit)"
        )
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":limit": {"N": str(per_minute)},
            ":exp": {"N": str(int(now) + 2 * 86400)},
            ":claim": {"S": claim},
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
            update = "ADD #m :one, tokens :r, held :r SET expires_at = :exp, last_claim = :claim"
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
                if old.get("last_claim") == claim:
                    return Reservation(key, day, held)  # our own earlier attempt, applied but unanswered
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
        self._add_once(
            {"pk": reservation.key, "sk": f"DAY#{reservation.day}"},
            "ADD tokens :t, held :h",
            {":t": {"N": str(tokens - reservation.tokens)}, ":h": {"N": str(-reservation.tokens)}},
        )

    def _add_once(self, key: dict[str, Any], update: str, values: dict[str, Any]) -> None:
        """An ADD update applied once even when the client retries it after its answer was lost (see reserve)."""
        claim = {"S": uuid.uuid4().hex}
        try:
            self.client.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": to_item(key),
                    "UpdateExpression": f"{update}{' SET' if ' SET ' not in update else ','} last_claim = :claim",
                    "ConditionExpression": "attribute_not_exists(last_claim) OR last_claim <> :claim",
                    "ExpressionAttributeValues": {**values, ":claim": claim},
                },
            )
        except AwsServiceError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return  # only our own claim fails the condition: an earlier attempt was applied
            if exc.retryable:
                raise ServiceUnavailableError("history storage is temporarily unavailable") from exc
            raise

    def charge(self, key: str, now: float, tokens: int) -> None:
        """Count tokens spent outside a turn's reservation (the rolling summary) against the daily budget."""
        if tokens <= 0:
            return
        self._add_once(
            {"pk": key, "sk": f"DAY#{_day(now)}"},
            "ADD tokens :t SET expires_at = if_not_exists(expires_at, :exp)",
            to_item({":t": tokens, ":exp": int(now) + 2 * 86400}),
        )

    def consume_nonce(self, nonce: str, expires: int) -> None:
        """Mark a single-use URL as used; a second use raises AlreadyUsedError.

        The item carries a claim of this call: when an attempt's answer is lost after DynamoDB applied it, the
        client's retry fails the condition against our own item, which is then our use, not a second one.
        """
        claim = uuid.uuid4().hex
        try:
            self.client.call(
                "PutItem",
                {
                    "TableName": self.table,
                    "Item": to_item({"pk": f"NONCE#{nonce}", "sk": "NONCE", "expires_at": expires, "claim": claim}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
            )
        except AwsServiceError as exc:
            if exc.code == "ConditionalCheckFailedException":
                old = exc.body.get("Item")
                if isinstance(old, dict) and old.get("claim") == {"S": claim}:
                    return  # our own earlier attempt, applied but unanswered
                raise AlreadyUsedError() from exc
            if exc.retryable:
                raise ServiceUnavailableError("single-use check is temporarily unavailable") from exc
            raise

    def release_nonce(self, nonce: str) -> None:
        """Undo consume_nonce for a request that was refused before anything was used."""
        self.client.call(
            "DeleteItem", {"TableName": self.table, "Key": to_item({"pk": f"NONCE#{nonce}", "sk": "NONCE"})}
        )


def subject_limit_key(subject: str) -> str:
    """The limiter item of an end user."""
    return f"RATE#{subject}"


def sw1_app_limit_key(app_id: str) -> str:
    """The limiter item of a whole SW1 app (its own key space: no subject can share it)."""
    return f"SW1APP#{app_id}"


def sw1_url_limit_key(signature: str) -> str:
    """The limiter item of one SW1 URL (by its signature's hash)."""
    return "SW1URL#" + hashlib.sha256(signature.encode()).hexdigest()[:32]


def _stop_signal(doc: dict[str, Any]) -> StopSignal:
    """What a reply's item says about why it must end (a stop request, or it is not in progress any more)."""
    if "stop_requested" in doc and doc.get("status") == IN_PROGRESS:
        return StopSignal(stop_at=_optional_number(doc.get("stop_at")))
    return StopSignal(gone=True)


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
