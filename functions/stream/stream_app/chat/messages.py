"""Chat messages parsed into an allow-listed, typed shape (pure: plain values in, frozen values out).

Only the fields OpenAI defines for each role survive parsing, with their sub-fields type-checked; anything
else is a 400 naming it. Stored history is read back through the same parser, so nothing a client ever
sent can become a storage attribute, and a stored item that does not parse is never sent to a provider.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from sigstream.core.errors import BadRequestError

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "developer", "user", "assistant", "tool")
MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id", "refusal")
# Response-only fields that SDKs echo back when a client resends `choices[0].message`: accepted, dropped.
_ECHOED: dict[str, tuple[type, ...]] = {
    "annotations": (list, type(None)),
    "audio": (type(None),),
    "function_call": (type(None),),
}
_TOKEN = re.compile(r"[^\s\x00-\x1f\x7f]{1,256}")  # ids and names: visible characters, no whitespace
_PART_TYPES: dict[str, tuple[str, ...]] = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}
# Token estimates for non-text parts, for sizing requests and history windows (not bounds; see below).
IMAGE_TOKENS = {"low": 100, "auto": 1600, "high": 1600}
FILE_ID_TOKENS = 2000
MESSAGE_OVERHEAD_TOKENS = 4
# Upper bounds, for the daily budget's reservations: a client chooses its text, so an estimate it can beat is no
# limit (31,000 astral characters are 8,004 tokens at four characters a token, 121,297 in o200k_base). Tokenisers
# are byte-level, so a text's UTF-8 bytes bound its tokens. An image costs at most what gpt-4o-mini, the default
# model and OpenAI's dearest per image, bills: 2,833 base tokens + 5,667 per 512 px tile, at most 8 tiles.
IMAGE_TOKEN_BOUND = {"low": 2833, "auto": 2833 + 8 * 5667, "high": 2833 + 8 * 5667}


@dataclass(frozen=True)
class TextPart:
    """{"type": "text", "text"}."""

    text: str

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI content part."""
        return {"type": "text", "text": self.text}


@dataclass(frozen=True)
class ImagePart:
    """{"type": "image_url", "image_url": {"url", "detail"?}}."""

    url: str
    detail: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI content part."""
        image: dict[str, Any] = {"url": self.url}
        if self.detail is not None:
            image["detail"] = self.detail
        return {"type": "image_url", "image_url": image}


@dataclass(frozen=True)
class AudioPart:
    """{"type": "input_audio", "input_audio": {"data", "format"}}."""

    data: str
    format: str

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI content part."""
        return {"type": "input_audio", "input_audio": {"data": self.data, "format": self.format}}


@dataclass(frozen=True)
class FilePart:
    """{"type": "file", "file": {"file_id"?, "file_data"?, "filename"?}}."""

    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI content part."""
        fields = {"file_id": self.file_id, "file_data": self.file_data, "filename": self.filename}
        return {"type": "file", "file": {k: v for k, v in fields.items() if v is not None}}


@dataclass(frozen=True)
class RefusalPart:
    """{"type": "refusal", "refusal"} (assistant messages only)."""

    refusal: str

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI content part."""
        return {"type": "refusal", "refusal": self.refusal}


ContentPart = TextPart | ImagePart | AudioPart | FilePart | RefusalPart


@dataclass(frozen=True)
class ToolCall:
    """An assistant's function call: {"id", "type": "function", "function": {"name", "arguments"}}."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI tool call."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Message:
    """One chat message, holding only what OpenAI defines for its role."""

    role: Role
    content: str | tuple[ContentPart, ...] | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    refusal: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The message as a provider (and a client resending history) sees it."""
        content = self.content
        doc: dict[str, Any] = {
            "role": self.role,
            "content": [p.to_openai() for p in content] if isinstance(content, tuple) else content,
        }
        if self.name is not None:
            doc["name"] = self.name
        if self.tool_calls:
            doc["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.tool_call_id is not None:
            doc["tool_call_id"] = self.tool_call_id
        if self.refusal is not None:
            doc["refusal"] = self.refusal
        return doc

    def text(self) -> str:
        """The message's text (content strings and text parts), e.g. for titles and moderation."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content or () if isinstance(p, TextPart))

    def text_chars(self) -> int:
        """Characters of text the provider will tokenise (content, refusal, name, tool calls)."""
        size = len(self.name or "") + len(self.refusal or "") + len(self.tool_call_id or "")
        if isinstance(self.content, str):
            size += len(self.content)
        for part in self.content if isinstance(self.content, tuple) else ():
            if isinstance(part, TextPart):
                size += len(part.text)
            elif isinstance(part, RefusalPart):
                size += len(part.refusal)
        return size + sum(len(c.name) + len(c.arguments) for c in self.tool_calls)

    def text_bytes(self) -> int:
        """UTF-8 bytes of the text the provider will tokenise (the same fields as text_chars)."""
        parts = [self.name or "", self.refusal or "", self.tool_call_id or ""]
        if isinstance(self.content, str):
            parts.append(self.content)
        for part in self.content if isinstance(self.content, tuple) else ():
            if isinstance(part, TextPart):
                parts.append(part.text)
            elif isinstance(part, RefusalPart):
                parts.append(part.refusal)
        parts.extend(c.name + c.arguments for c in self.tool_calls)
        return sum(len(text.encode("utf-8", "surrogatepass")) for text in parts)

    def token_bound(self) -> int:
        """The most prompt tokens this message can cost: what a budget reservation holds for it."""
        tokens = self.text_bytes() + MESSAGE_OVERHEAD_TOKENS
        for part in self.content if isinstance(self.content, tuple) else ():
            if isinstance(part, ImagePart):
                tokens += IMAGE_TOKEN_BOUND.get(part.detail or "auto", IMAGE_TOKEN_BOUND["high"])
            elif isinstance(part, (AudioPart, FilePart)):
                tokens += _estimated_media_tokens(part)  # no bound below the model's context: docs/security.md
        return tokens

    def estimated_tokens(self) -> int:
        """A cheap upper-ish estimate of the prompt tokens (four characters per token, fixed media costs)."""
        tokens = -(-self.text_chars() // 4) + MESSAGE_OVERHEAD_TOKENS
        for part in self.content if isinstance(self.content, tuple) else ():
            if isinstance(part, ImagePart):
                tokens += IMAGE_TOKENS.get(part.detail or "auto", IMAGE_TOKENS["high"])
            elif isinstance(part, (AudioPart, FilePart)):
                tokens += _estimated_media_tokens(part)
        return tokens

    def normalised(self) -> Message:
        """The canonical form for comparing messages: one text part is a string, JSON arguments are compact."""
        content = self.content
        if isinstance(content, tuple) and len(content) == 1 and isinstance(content[0], TextPart):
            content = content[0].text
        if self.role == "assistant" and self.tool_calls and content in ("", ()):
            content = None
        calls = tuple(replace(c, arguments=_compact_json(c.arguments)) for c in self.tool_calls)
        return replace(self, content=content, tool_calls=calls)

    def fingerprint(self) -> str:
        """A stable string for the normalised message (equal for messages a provider cannot tell apart)."""
        return json.dumps(self.normalised().to_openai(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _estimated_media_tokens(part: AudioPart | FilePart) -> int:
    if isinstance(part, AudioPart):
        return len(part.data) // 2000 + 50  # ~10 tokens a second at >= 16 kB/s of audio
    return -(-len(part.file_data) // 4) if part.file_data else FILE_ID_TOKENS


def _js_number(text: str) -> int | float:
    """A JSON number as JavaScript reads it: a double, integral values without a fraction (`2.0` is `2`)."""
    value = float(text)
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def _compact_json(text: str) -> str:
    # Numbers as JavaScript sees them: the AI SDK resends JSON.stringify(JSON.parse(arguments)), which turns a
    # model's `2.0` into `2` and rounds integers beyond 2**53.
    try:
        doc = json.loads(text, parse_float=_js_number, parse_int=_js_number)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def _safe_name(name: object) -> str:
    """A client-chosen field name, made safe to echo in an error (short, printable)."""
    text = str(name)
    return text if len(text) <= 40 and text.isprintable() else repr(text[:40])


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestError(f"{where} must be an object", param=where)
    return value


def _only(doc: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in doc:
        if key not in allowed:
            name = _safe_name(key)
            raise BadRequestError(f"{where}.{name} is not a supported field", param=f"{where}.{name}")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequestError(f"{where} must be a string", param=where)
    return value


def _token(value: Any, where: str) -> str:
    text = _string(value, where)
    if not _TOKEN.fullmatch(text):
        raise BadRequestError(f"{where} must be 1 to 256 visible characters without spaces", param=where)
    return text


def _optional(doc: dict[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    return None if value is None else _string(value, f"{where}.{key}")


def _part(value: Any, role: str, where: str) -> ContentPart:
    doc = _object(value, where)
    kind = doc.get("type")
    allowed = _PART_TYPES[role]
    if kind not in allowed:
        raise BadRequestError(f"{where}.type must be one of {list(allowed)} for {role} messages", param=f"{where}.type")
    if kind == "text":
        _only(doc, ("type", "text"), where)
        return TextPart(_string(doc.get("text"), f"{where}.text"))
    if kind == "refusal":
        _only(doc, ("type", "refusal"), where)
        return RefusalPart(_string(doc.get("refusal"), f"{where}.refusal"))
    _only(doc, ("type", kind), where)
    inner_where = f"{where}.{kind}"
    inner = _object(doc.get(kind), inner_where)
    if kind == "image_url":
        _only(inner, ("url", "detail"), inner_where)
        url = _string(inner.get("url"), f"{inner_where}.url")
        detail = inner.get("detail")
        if detail is not None and detail not in IMAGE_TOKENS:
            raise BadRequestError(f"{inner_where}.detail must be auto, low or high", param=f"{inner_where}.detail")
        if not url:
            raise BadRequestError(f"{inner_where}.url must not be empty", param=f"{inner_where}.url")
        return ImagePart(url, detail)
    if kind == "input_audio":
        _only(inner, ("data", "format"), inner_where)
        audio_format = inner.get("format")
        if audio_format not in ("wav", "mp3"):
            raise BadRequestError(f"{inner_where}.format must be wav or mp3", param=f"{inner_where}.format")
        return AudioPart(_string(inner.get("data"), f"{inner_where}.data"), audio_format)
    _only(inner, ("file_id", "file_data", "filename"), inner_where)
    file_id, file_data = _optional(inner, "file_id", inner_where), _optional(inner, "file_data", inner_where)
    if file_id is None and file_data is None:
        raise BadRequestError(f"{inner_where} needs file_id or file_data", param=inner_where)
    return FilePart(file_id, file_data, _optional(inner, "filename", inner_where))


def _content(value: Any, role: str, where: str) -> str | tuple[ContentPart, ...] | None:
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRequestError(f"{where} must be a string or an array of content parts", param=where)
    if not value and role != "assistant":
        raise BadRequestError(f"{where} must not be an empty array", param=where)
    return tuple(_part(part, role, f"{where}[{i}]") for i, part in enumerate(value))


def _tool_call(value: Any, where: str) -> ToolCall:
    doc = _object(value, where)
    _only(doc, ("id", "type", "function", "index"), where)
    if doc.get("type", "function") != "function":
        raise BadRequestError(f"{where}.type must be function", param=f"{where}.type")
    function = _object(doc.get("function"), f"{where}.function")
    _only(function, ("name", "arguments"), f"{where}.function")
    return ToolCall(
        id=_token(doc.get("id"), f"{where}.id"),
        name=_token(function.get("name"), f"{where}.function.name"),
        arguments=_string(function.get("arguments"), f"{where}.function.arguments"),
    )


def parse_message(value: Any, where: str) -> Message:
    """One message, checked field by field; raises BadRequestError naming the first bad field."""
    doc = _object(value, where)
    role = doc.get("role")
    if role not in ROLES:
        raise BadRequestError(f"{where}.role must be one of {sorted(ROLES)}", param=f"{where}.role")
    for key, value_types in _ECHOED.items():
        if key in doc and (role != "assistant" or not isinstance(doc[key], value_types)):
            raise BadRequestError(f"{where}.{key} is not supported", param=f"{where}.{key}")
    _only(doc, (*MESSAGE_FIELDS, *_ECHOED), where)
    content = _content(doc.get("content"), role, f"{where}.content")
    name = None if doc.get("name") is None else _token(doc["name"], f"{where}.name")
    for key, owner in (("tool_calls", "assistant"), ("refusal", "assistant"), ("tool_call_id", "tool")):
        if doc.get(key) is not None and role != owner:
            raise BadRequestError(f"{where}.{key} is only allowed on {owner} messages", param=f"{where}.{key}")
    calls = doc.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise BadRequestError(f"{where}.tool_calls must be an array", param=f"{where}.tool_calls")
    tool_calls = tuple(_tool_call(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls or []))
    refusal = _optional(doc, "refusal", where)
    tool_call_id = None
    if role == "tool":
        tool_call_id = _token(doc.get("tool_call_id"), f"{where}.tool_call_id")
    if content is None and (role != "assistant" or not (tool_calls or refusal is not None)):
        raise BadRequestError(f"{where}.content is required", param=f"{where}.content")
    return Message(role, content, name, tool_calls, tool_call_id, refusal)


def message_from_stored(doc: dict[str, Any]) -> Message | None:
    """A stored message's allow-listed fields re-parsed; None if the item is not a valid message."""
    try:
        return parse_message({k: doc[k] for k in MESSAGE_FIELDS if k in doc}, "stored")
    except BadRequestError:
        return None


def _visible(text: Any, fallback: str) -> str:
    cleaned = "".join(ch for ch in str(text or "") if not ch.isspace() and ch.isprintable())[:256]
    return cleaned or fallback


def assistant_reply(content: str, refusal: str, tool_calls: list[dict[str, Any]]) -> Message:
    """The provider's reply as a Message that always re-parses (odd provider values are coerced, not refused)."""
    calls = []
    for index, call in enumerate(tool_calls):
        raw_function = call.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        calls.append(
            ToolCall(
                id=_visible(call.get("id"), f"call_{index}"),
                name=_visible(function.get("name"), "unknown"),
                arguments=str(function.get("arguments") or ""),
            )
        )
    text = str(content or "")
    return Message(
        "assistant",
        text if text or not (calls or refusal) else None,
        tool_calls=tuple(calls),
        refusal=str(refusal) if refusal else None,
    )
