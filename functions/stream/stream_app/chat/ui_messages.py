"""Convert the body DefaultChatTransport POSTs (`{id, messages: UIMessage[], trigger, messageId}`) to OpenAI messages.

Follows the `ai` package's own convertToModelMessages + @ai-sdk/openai (docs/reference/ui-message-stream.md): each
step of an assistant message becomes an assistant message (text + `tool_calls`) followed by one `tool` message per
result; reasoning, sources and data parts are UI-only. The output is plain chat-completions dicts, for the OpenAI
message parser to validate like any other request.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sigstream.core.errors import BadRequestError, SigstreamError

ROLES = ("system", "user", "assistant")
TRIGGERS = ("submit-message", "regenerate-message")
BODY_FIELDS = frozenset({"id", "messages", "trigger", "messageId"})
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UI_ONLY_PARTS = frozenset({"reasoning", "reasoning-file", "source-url", "source-document", "custom"})
_AUDIO_FORMATS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
}
_DENIED = "Tool call execution denied."
_MESSAGE_PATH = re.compile(r"messages\[(\d+)\]((?:\.[A-Za-z_]+|\[\d+\])*)")


@dataclass(frozen=True)
class UiLimits:
    """Bounds on what one request may hold (the body size itself is capped before parsing)."""

    max_messages: int = 256
    max_parts: int = 256
    max_id_chars: int = 256


@dataclass(frozen=True)
class UiTurn:
    """One UIMessage: its id and role, and the chat-completions messages it becomes (none for UI-only content)."""

    id: str
    role: str
    openai: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class UiChatBody:
    """A validated DefaultChatTransport body."""

    chat_id: str | None
    trigger: str
    message_id: str | None
    turns: tuple[UiTurn, ...]
    params: dict[str, Any] = field(default_factory=dict)  # other body keys (model, tools, ...), unvalidated

    def openai_messages(self) -> list[dict[str, Any]]:
        """The whole conversation as chat-completions messages, in order."""
        return [message for turn in self.turns for message in turn.openai]


def parse_ui_chat_body(doc: Mapping[str, Any], *, limits: UiLimits = UiLimits()) -> UiChatBody:
    """Validate the transport's body; `params` keeps every other key for the chat-completions request parser."""
    chat_id = _optional_id(doc, "id", "id", limits)
    message_id = _optional_id(doc, "messageId", "messageId", limits)
    trigger = doc.get("trigger", "submit-message")
    if trigger not in TRIGGERS:
        raise BadRequestError(f"trigger must be one of {list(TRIGGERS)}", param="trigger")
    turns = ui_messages_to_openai(doc.get("messages"), limits=limits)
    params = {key: value for key, value in doc.items() if key not in BODY_FIELDS}
    return UiChatBody(chat_id, str(trigger), message_id, turns, params)


def response_message_id(body: UiChatBody, new_id: str) -> str:
    """The id of the assistant message this request answers: the last one's when continuing it, else `new_id`.

    After client-side tool results, useChat resends with the assistant message last and keeps appending to it; a
    `start` chunk with another id would make it show the reply twice.
    """
    last = body.turns[-1] if body.turns else None
    return last.id if last is not None and last.role == "assistant" else new_id


def ui_messages_to_openai(messages: Any, *, limits: UiLimits = UiLimits()) -> tuple[UiTurn, ...]:
    """UIMessage[] to turns of chat-completions messages; a BadRequestError names the first bad field."""
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("messages must be a non-empty array of UI messages", param="messages")
    if len(messages) > limits.max_messages:
        raise BadRequestError(f"messages may hold at most {limits.max_messages} items", param="messages")
    return tuple(_turn(f"messages[{i}]", message, limits) for i, message in enumerate(messages))


def _optional_id(doc: Mapping[str, Any], key: str, where: str, limits: UiLimits) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limits.max_id_chars:
        raise BadRequestError(f"{where} must be a string of at most {limits.max_id_chars} characters", param=where)
    return value


def _required_str(part: Mapping[str, Any], key: str, where: str) -> str:
    value = part.get(key)
    if not isinstance(value, str):
        raise BadRequestError(f"{where}.{key} must be a string", param=f"{where}.{key}")
    return value


def _turn(where: str, message: Any, limits: UiLimits) -> UiTurn:
    if not isinstance(message, dict):
        raise BadRequestError(f"{where} must be an object", param=where)
    message_id = message.get("id")
    if not isinstance(message_id, str) or len(message_id) > limits.max_id_chars:
        raise BadRequestError(
            f"{where}.id must be a string of at most {limits.max_id_chars} characters", param=f"{where}.id"
        )
    role = message.get("role")
    if role not in ROLES:
        raise BadRequestError(f"{where}.role must be one of {list(ROLES)}", param=f"{where}.role")
    parts = message.get("parts")
    if not isinstance(parts, list):
        raise BadRequestError(f"{where}.parts must be an array", param=f"{where}.parts")
    if len(parts) > limits.max_parts:
        raise BadRequestError(f"{where}.parts may hold at most {limits.max_parts} items", param=f"{where}.parts")
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise BadRequestError(
                f"{where}.parts[{j}].type is required (each part is an object with a type)",
                param=f"{where}.parts[{j}].type",
            )
    if role == "system":
        return UiTurn(message_id, role, (_system(where, parts),))
    if role == "user":
        return UiTurn(message_id, role, (_user(where, parts, allow=("text", "file")),))
    return UiTurn(message_id, role, tuple(_assistant(where, parts, limits)))


def _unsupported(where: str, part_type: str, role: str) -> BadRequestError:
    return BadRequestError(f"{where}.type {part_type!r} is not supported in a {role} message", param=f"{where}.type")


def _system(where: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    text = ""
    for j, part in enumerate(parts):
        here = f"{where}.parts[{j}]"
        if part["type"] == "text":
            text += _required_str(part, "text", here)
        elif not part["type"].startswith("data-"):
            raise _unsupported(here, part["type"], "system")
    return {"role": "system", "content": text}


def _user(where: str, parts: list[Any], *, allow: tuple[str, ...]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        here = f"{where}.parts[{j}]"
        part_type = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part_type, str):
            raise BadRequestError(f"{here}.type must be a string", param=f"{here}.type")
        if part_type == "text" and part_type in allow:
            content.append({"type": "text", "text": _required_str(part, "text", here)})
        elif part_type == "file" and part_type in allow:
            content.append(_file(here, part, j))
        elif not part_type.startswith("data-"):  # data parts are the app's UI state, not model input
            raise _unsupported(here, part_type, "user")
    if not content:
        raise BadRequestError(f"{where} needs at least one text or file part", param=f"{where}.parts")
    if len(content) == 1 and content[0]["type"] == "text":
        return {"role": "user", "content": content[0]["text"]}
    return {"role": "user", "content": content}


def _data_url(here: str, url: str) -> tuple[str, str]:
    """(media type, base64 payload) of a base64 `data:` URL."""
    header, sep, payload = url.partition(",")
    if not url.startswith("data:") or not sep or not header.endswith(";base64"):
        raise BadRequestError(f"{here}.url must be a base64 data: URL for this media type", param=f"{here}.url")
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError(f"{here}.url holds invalid base64 data", param=f"{here}.url") from exc
    return header[5:].removesuffix(";base64").split(";")[0].lower(), payload


def _file(here: str, part: Mapping[str, Any], index: int) -> dict[str, Any]:
    media_type = _required_str(part, "mediaType", here).strip().lower()
    url = _required_str(part, "url", here)
    filename = part.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise BadRequestError(f"{here}.filename must be a string", param=f"{here}.filename")
    if part.get("providerReference") is not None:  # a provider file id would reach files of the shared API key
        raise BadRequestError(
            f"{here}.providerReference is not accepted; send the file as a data: URL", param=f"{here}.providerReference"
        )
    top = media_type.split("/")[0]
    if top == "image":
        if not (url.startswith("https://") or url.startswith("data:image/")):
            raise BadRequestError(f"{here}.url must be an https: or data:image/ URL", param=f"{here}.url")
        if url.startswith("data:"):
            _data_url(here, url)
        return {"type": "image_url", "image_url": {"url": url}}
    if media_type == "application/pdf":
        _, payload = _data_url(here, url)
        name = filename or f"part-{index}.pdf"
        return {"type": "file", "file": {"filename": name, "file_data": f"data:application/pdf;base64,{payload}"}}
    if media_type in _AUDIO_FORMATS:
        _, payload = _data_url(here, url)
        return {"type": "input_audio", "input_audio": {"data": payload, "format": _AUDIO_FORMATS[media_type]}}
    raise BadRequestError(
        f"{here}.mediaType {media_type!r} is not supported by the provider (images, application/pdf, audio/wav, "
        "audio/mpeg)",
        param=f"{here}.mediaType",
    )


def _tool_arguments(value: Any) -> str:
    """The provider's `arguments` string, as @ai-sdk/openai serialises a tool input (non-objects become `{}`)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return "{}"
        return value if isinstance(parsed, dict) else "{}"
    return _json(value if isinstance(value, dict) else {})


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _tool_result(here: str, part: Mapping[str, Any], state: str) -> str:
    if state == "output-available":
        output = part.get("output")
        return output if isinstance(output, str) else _json(output)
    if state == "output-error":
        return _json({"error": _required_str(part, "errorText", here)})
    approval = part.get("approval")
    reason = approval.get("reason") if isinstance(approval, Mapping) else None
    return _json({"error": reason if isinstance(reason, str) else _DENIED})


def _tool_call(here: str, part: Mapping[str, Any], limits: UiLimits) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The assistant's tool call and its `tool` result message; None for a call still streaming its input."""
    part_type = part["type"]
    name = part.get("toolName") if part_type == "dynamic-tool" else part_type[5:]
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        where = f"{here}.toolName" if part_type == "dynamic-tool" else f"{here}.type"
        raise BadRequestError(f"{where} must name a tool (letters, digits, _ or -, at most 64)", param=where)
    call_id = part.get("toolCallId")
    if not isinstance(call_id, str) or not 0 < len(call_id) <= limits.max_id_chars:
        raise BadRequestError(f"{here}.toolCallId must be a non-empty string", param=f"{here}.toolCallId")
    if part.get("providerExecuted") is True:
        raise BadRequestError(
            f"{here}.providerExecuted: provider-executed tools are not supported", param=f"{here}.providerExecuted"
        )
    state = part.get("state")
    if state == "input-streaming":
        return None
    if state == "input-available":
        raise BadRequestError(
            f"{here}.state: tool call {call_id} has no output; add its result (addToolResult) before sending",
            param=f"{here}.state",
        )
    if state not in ("output-available", "output-error", "output-denied"):
        raise BadRequestError(
            f"{here}.state must be one of ['input-streaming', 'output-available', 'output-error', 'output-denied']",
            param=f"{here}.state",
        )
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": _tool_arguments(part.get("input"))},
    }
    return call, {"role": "tool", "tool_call_id": call_id, "content": _tool_result(here, part, state)}


def _assistant(where: str, parts: list[dict[str, Any]], limits: UiLimits) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def end_step() -> None:
        joined = "".join(text)
        if calls:
            out.append({"role": "assistant", "content": joined or None, "tool_calls": list(calls)})
            out.extend(results)
        elif joined:
            out.append({"role": "assistant", "content": joined})
        text.clear()
        calls.clear()
        results.clear()

    for j, part in enumerate(parts):
        here = f"{where}.parts[{j}]"
        part_type: str = part["type"]
        if part_type == "text":
            text.append(_required_str(part, "text", here))
        elif part_type == "step-start":
            end_step()
        elif part_type == "dynamic-tool" or part_type.startswith("tool-"):
            pair = _tool_call(here, part, limits)
            if pair is not None:
                calls.append(pair[0])
                results.append(pair[1])
        elif part_type == "steering-message":  # a user message added mid-reply, placed before the next step
            end_step()
            steering = part.get("parts")
            if not isinstance(steering, list):
                raise BadRequestError(f"{here}.parts must be an array", param=f"{here}.parts")
            out.append(_user(here, steering, allow=("text", "file")))
        elif part_type == "file" or part_type in _UI_ONLY_PARTS or part_type.startswith("data-"):
            continue  # chat-completions assistant messages carry text and tool calls only
        else:
            raise _unsupported(here, part_type, "assistant")
    end_step()
    return out


def name_ui_messages(error: SigstreamError, owners: Sequence[int]) -> None:
    """Rename the `messages[i]` (a chat-completions index) that `error` names to the UI message that became it.

    One UI message can be several chat-completions messages (each tool step, each result), so the index the
    message parser or the history merge names is not one the page can find; a field below it is in its `parts`.
    """

    def rename(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if index >= len(owners):
            return match.group(0)
        return f"messages[{owners[index]}]" + (".parts" if match.group(2) else "")

    if error.param is None or not _MESSAGE_PATH.match(error.param):
        return
    error.param = _MESSAGE_PATH.sub(rename, error.param)
    error.message = _MESSAGE_PATH.sub(rename, error.message)
    error.args = (error.message,)
