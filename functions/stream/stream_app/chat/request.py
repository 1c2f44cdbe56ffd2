"""Validate an OpenAI chat-completions request body against the schema and the signed policy."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from sigstream.core.errors import (
    BadRequestError,
    InvalidSignatureError,
    PolicyViolationError,
    UnsupportedMediaTypeError,
)
from sigstream.core.signed_url import MODEL_PATTERN, Grant

ROLES = {"system", "developer", "user", "assistant", "tool"}
MAX_MESSAGES = 256
MAX_DEPTH = 32


@dataclass(frozen=True)
class ChatRequest:
    """A validated request: the parameters to send upstream, and the client's new messages."""

    params: dict[str, Any]
    messages: list[dict[str, Any]]
    stream: bool
    usage_requested: bool


def _depth(value: Any, limit: int) -> int:
    stack, deepest = [(value, 1)], 1
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json_body(body: bytes, content_type: str) -> dict[str, Any]:
    """A JSON object body, with clear errors for wrong type, bad UTF-8, bad JSON and deep nesting."""
    media = content_type.split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaTypeError("Content-Type must be application/json", param="content-type")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError("request body is not valid UTF-8", param="body") from exc
    try:
        doc = json.loads(text)
    except RecursionError as exc:
        raise BadRequestError("request body is nested too deeply", param="body") from exc
    except ValueError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc.args[0][:80]}", param="body") from exc
    if not isinstance(doc, dict):
        raise BadRequestError("request body must be a JSON object", param="body")
    if _depth(doc, MAX_DEPTH) > MAX_DEPTH:
        raise BadRequestError("request body is nested too deeply", param="body")
    return doc


def _check_message(index: int, message: Any) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise BadRequestError(f"{where} must be an object", param=where)
    if message.get("role") not in ROLES:
        raise BadRequestError(f"{where}.role must be one of {sorted(ROLES)}", param=f"{where}.role")
    content = message.get("content")
    if content is not None and not isinstance(content, (str, list)):
        raise BadRequestError(f"{where}.content must be a string or an array", param=f"{where}.content")
    if content is None and message["role"] != "assistant":
        raise BadRequestError(f"{where}.content is required", param=f"{where}.content")
    if message["role"] == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise BadRequestError(f"{where}.tool_call_id is required for tool messages", param=f"{where}.tool_call_id")
    return message


def _int_field(doc: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequestError(f"{name} must be an integer from {low} to {high}", param=name)
    return value


def parse_chat_request(
    body: bytes, content_type: str, grant: Grant, default_model: str, *, raw_body: bytes | None = None
) -> ChatRequest:
    """Check schema and policy; fill the model and max_tokens defaults the policy implies."""
    if grant.body_sha256 is not None:
        digest = hashlib.sha256(raw_body if raw_body is not None else body).hexdigest()
        if not hmac.compare_digest(digest, grant.body_sha256):
            raise InvalidSignatureError()
    doc = parse_json_body(body, content_type)
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("messages must be a non-empty array", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise BadRequestError(f"messages may hold at most {MAX_MESSAGES} items", param="messages")
    checked = [_check_message(i, m) for i, m in enumerate(messages)]
    model = doc.get("model", grant.models[0] if grant.models else default_model)
    if not isinstance(model, str) or not MODEL_PATTERN.match(model):
        raise BadRequestError("model must be a model name", param="model")
    if grant.models and model not in grant.models:
        raise PolicyViolationError(f"model {model} is not allowed by this URL", param="model")
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequestError("stream must be a boolean", param="stream")
    for name in ("temperature", "top_p"):
        value = doc.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise BadRequestError(f"{name} must be a number", param=name)
    for name in ("tools", "stop"):
        if name in doc and not isinstance(doc[name], (list, str, type(None))):
            raise BadRequestError(f"{name} has the wrong type", param=name)
    _int_field(doc, "n", 1, 16)
    limit_name = "max_completion_tokens" if "max_completion_tokens" in doc else "max_tokens"
    requested = _int_field(doc, limit_name, 1, 10_000_000)
    params = dict(doc, model=model, messages=checked)
    if grant.max_tokens is not None:
        if requested is not None and requested > grant.max_tokens:
            raise PolicyViolationError(f"{limit_name} exceeds the signed cap of {grant.max_tokens}", param=limit_name)
        params[limit_name] = requested or grant.max_tokens
    options = doc.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequestError("stream_options must be an object", param="stream_options")
    usage_requested = bool((options or {}).get("include_usage"))
    if stream:
        params["stream_options"] = {**(options or {}), "include_usage": True}  # usage is always recorded
    return ChatRequest(params=params, messages=checked, stream=stream, usage_requested=usage_requested)
