"""Validate an OpenAI chat-completions request body against the schema, the deployment policy and the signed URL."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from sigstream.core.errors import (
    BadRequestError,
    InvalidSignatureError,
    PolicyViolationError,
    UnsupportedMediaTypeError,
)
from sigstream.core.signed_url import MODEL_PATTERN, Grant
from stream_app.chat.messages import AudioPart, FilePart, ImagePart, Message, TextPart, parse_message
from stream_app.chat.policy import STRUCTURAL_PARAMETERS, ChatPolicy

MAX_DEPTH = 32
MAX_TOKENS_LIMIT = 10_000_000
MAX_N = 128
# One message is one DynamoDB item (400 KB at most, attribute names and metadata included).
MAX_STORED_MESSAGE_BYTES = 350_000
# On a conversation URL a client may resend the whole history: the deployment's message and size limits then
# apply to the new messages (check_new_messages), and this bounds what is compared with the stored history.
MAX_RESENT_MESSAGES = 256
_LONE_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")
_TOKEN_LIMIT_NAMES = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class ChatRequest:
    """A validated request: the parameters to send upstream, and the client's new messages."""

    params: dict[str, Any]  # without "messages": the caller adds the history window and these
    messages: tuple[Message, ...]
    stream: bool
    usage_requested: bool
    max_output_tokens: int  # per choice, after every cap
    choices: int  # n
    input_tokens: int  # estimate for the client's messages and the other parameters (tools, schemas, ...)
    input_bound: int  # the most those can really cost (UTF-8 bytes, image maxima): what the budget reserves
    extra_tokens: int = 0  # the estimate for the other parameters alone
    extra_bound: int = 0  # ... and their bound

    @property
    def output_tokens(self) -> int:
        """The most output tokens the provider may produce for this request."""
        return self.max_output_tokens * self.choices


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("numbers must be finite")
    return value


def _check_tree(value: Any, limit: int, strings: bool) -> None:
    """Depth limit, and (when the text has surrogate escapes) no lone surrogates in any string or key."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise BadRequestError("request body is nested too deeply", param="body")
        if strings and isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadRequestError("request body holds a lone UTF-16 surrogate", param="body") from exc
        elif isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
            if strings:
                stack.extend((key, depth) for key in node)
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def parse_json_body(body: bytes, content_type: str) -> dict[str, Any]:
    """A JSON object body, with clear errors for wrong type, bad UTF-8, bad JSON, NaN, surrogates and nesting."""
    media = content_type.split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaTypeError("Content-Type must be application/json", param="content-type")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError("request body is not valid UTF-8", param="body") from exc
    try:
        doc = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise BadRequestError("request body is nested too deeply", param="body") from exc
    except ValueError as exc:
        raise BadRequestError(f"request body is not valid JSON: {str(exc.args[0])[:80]}", param="body") from exc
    if not isinstance(doc, dict):
        raise BadRequestError("request body must be a JSON object", param="body")
    _check_tree(doc, MAX_DEPTH, strings=bool(_LONE_SURROGATE_HINT.search(text)))
    return doc


def _int_field(doc: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequestError(f"{name} must be an integer from {low} to {high}", param=name)
    return value


def _check_type(doc: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> None:
    value = doc.get(name)
    if value is not None and (isinstance(value, bool) is not (bool in kinds) or not isinstance(value, kinds)):
        raise BadRequestError(f"{name} must be {what}", param=name)


def _check_known_parameters(doc: dict[str, Any]) -> None:
    """Types of the parameters we know; others on the operator's allow-list go through as they are."""
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _check_type(doc, name, (int, float), "a number")
    for name in ("parallel_tool_calls", "logprobs"):
        _check_type(doc, name, (bool,), "a boolean")
    for name in ("user", "reasoning_effort"):
        _check_type(doc, name, (str,), "a string")
    for name in ("response_format", "logit_bias"):
        _check_type(doc, name, (dict,), "an object")
    _check_type(doc, "tool_choice", (str, dict), "a string or an object")
    _int_field(doc, "seed", -(2**63), 2**63 - 1)
    _int_field(doc, "top_logprobs", 0, 20)
    stop = doc.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        raise BadRequestError("stop must be a string or an array of up to 4 strings", param="stop")
    tools = doc.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and len(tools) <= 128 and all(isinstance(t, dict) for t in tools)
    ):
        raise BadRequestError("tools must be an array of up to 128 objects", param="tools")


def _model(doc: dict[str, Any], grant: Grant, policy: ChatPolicy) -> str:
    model = doc.get("model")
    if model is None:
        model = grant.models[0] if grant.models else policy.default_model
    if not isinstance(model, str) or not MODEL_PATTERN.fullmatch(model):
        raise BadRequestError("model must be a model name", param="model")
    if grant.models and model not in grant.models:
        raise PolicyViolationError(f"model {model} is not allowed by this URL", param="model")
    if not policy.allows_model(model):
        raise PolicyViolationError(f"model {model} is not allowed by this deployment", param="model")
    return model


def _output_cap(doc: dict[str, Any], grant: Grant, policy: ChatPolicy) -> tuple[int, tuple[str, ...]]:
    """The one output cap: the smallest of the client's limits, the signed cap and the deployment's."""
    requested = {name: _int_field(doc, name, 1, MAX_TOKENS_LIMIT) for name in _TOKEN_LIMIT_NAMES}
    named = tuple(name for name, value in requested.items() if value is not None)
    caps = [(policy.max_output_tokens, "this deployment")]
    if grant.max_tokens is not None:
        caps.append((grant.max_tokens, "this URL"))
    cap, owner = min(caps)
    if not named:
        return cap, (policy.output_tokens_parameter,)
    smallest = min(named, key=lambda name: requested[name] or 0)
    value = requested[smallest] or 0
    if value > cap:
        raise PolicyViolationError(f"{smallest} exceeds the cap of {cap} set by {owner}", param=smallest)
    return value, named


def _extras(doc: dict[str, Any]) -> tuple[int, int]:
    """The estimated tokens and the bound of everything but the messages (tools, schemas, ...)."""
    extras = {k: v for k, v in doc.items() if k not in ("messages", "model", "stream", "stream_options")}
    return -(-len(json.dumps(extras)) // 4), len(
        json.dumps(extras, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )


def _input_size(
    messages: tuple[Message, ...], extra_tokens: int, extra_bound: int, policy: ChatPolicy
) -> tuple[int, int]:
    """The input's estimated tokens (checked against the policy) and its upper bound (for the reservation)."""
    chars = sum(m.text_chars() for m in messages)
    if chars > policy.max_input_chars:
        raise BadRequestError(
            f"messages hold {chars} characters; this deployment allows {policy.max_input_chars}", param="messages"
        )
    tokens = sum(m.estimated_tokens() for m in messages) + extra_tokens
    if tokens > policy.max_input_tokens:
        raise BadRequestError(
            f"the request is about {tokens} tokens; this deployment allows {policy.max_input_tokens}",
            param="messages",
        )
    return tokens, sum(m.token_bound() for m in messages) + extra_bound


def check_new_messages(chat: ChatRequest, messages: tuple[Message, ...], policy: ChatPolicy) -> ChatRequest:
    """A conversation turn's new messages (what the history did not hold) under the deployment's limits."""
    if len(messages) > policy.max_request_messages:
        raise BadRequestError(
            f"a turn may add at most {policy.max_request_messages} messages; this one adds {len(messages)}",
            param="messages",
        )
    offset = len(chat.messages) - len(messages)  # the new messages end the request (a resend's suffix)
    for i, message in enumerate(messages, start=offset):
        # Only what the turn stores: a resent long reply is already stored (in part items) and is not refused.
        if len(json.dumps(message.to_openai())) > MAX_STORED_MESSAGE_BYTES:
            where = f"messages[{i}]"
            raise BadRequestError(f"{where} is too large to keep in the history", param=where)
    tokens, bound = _input_size(messages, chat.extra_tokens, chat.extra_bound, policy)
    return replace(chat, messages=messages, input_tokens=tokens, input_bound=bound)


_PART_TYPES = {TextPart: "text", ImagePart: "image_url", AudioPart: "input_audio", FilePart: "file"}


def _check_content_parts(messages: tuple[Message, ...], policy: ChatPolicy) -> None:
    """Only the content-part types this deployment allows (audio and files are opt-in)."""
    for i, message in enumerate(messages):
        if not isinstance(message.content, tuple):
            continue
        for j, part in enumerate(message.content):
            kind = _PART_TYPES.get(type(part))
            if kind is not None and kind not in policy.content_parts:
                where = f"messages[{i}].content[{j}].type"
                raise BadRequestError(f"content parts of type {kind} are not allowed by this deployment", param=where)


def parse_chat_request(
    body: bytes, content_type: str, grant: Grant, policy: ChatPolicy, *, raw_body: bytes | None = None
) -> ChatRequest:
    """Check schema and policy; fill the model and token-limit defaults the policy implies."""
    if grant.body_sha256 is not None:
        digest = hashlib.sha256(raw_body if raw_body is not None else body).hexdigest()
        if not hmac.compare_digest(digest, grant.body_sha256):
            raise InvalidSignatureError()
    doc = parse_json_body(body, content_type)
    for name in doc:
        if not policy.allows_parameter(name):
            shown = name if len(name) <= 40 and name.isprintable() else repr(name[:40])
            raise BadRequestError(f"parameter {shown} is not allowed by this deployment", param=shown)
    raw_messages = doc.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise BadRequestError("messages must be a non-empty array", param="messages")
    most = MAX_RESENT_MESSAGES if grant.conversation_id else policy.max_request_messages
    if len(raw_messages) > most:
        hint = "; send only the new messages" if grant.conversation_id else ""
        raise BadRequestError(f"messages may hold at most {most} items{hint}", param="messages")
    messages = tuple(parse_message(m, f"messages[{i}]") for i, m in enumerate(raw_messages))
    _check_content_parts(messages, policy)
    model = _model(doc, grant, policy)
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequestError("stream must be a boolean", param="stream")
    _check_known_parameters(doc)
    choices = _int_field(doc, "n", 1, MAX_N) or 1
    if choices > (grant.n or 1):
        raise PolicyViolationError(f"n exceeds the cap of {grant.n or 1} set by this URL", param="n")
    max_output, limit_names = _output_cap(doc, grant, policy)
    options = doc.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequestError("stream_options must be an object", param="stream_options")
        for key, value in options.items():
            if key not in ("include_usage", "include_obfuscation") or not isinstance(value, bool):
                shown = key if len(key) <= 40 and key.isprintable() else repr(key[:40])
                raise BadRequestError(
                    f"stream_options.{shown} is not a supported boolean option", param=f"stream_options.{shown}"
                )
    extra_tokens, extra_bound = _extras(doc)
    if grant.conversation_id:  # limited once the new messages are known (check_new_messages)
        input_tokens = sum(m.estimated_tokens() for m in messages) + extra_tokens
        input_bound = sum(m.token_bound() for m in messages) + extra_bound
    else:
        input_tokens, input_bound = _input_size(messages, extra_tokens, extra_bound, policy)
    params = {k: v for k, v in doc.items() if k != "messages"}
    params["model"] = model
    for name in _TOKEN_LIMIT_NAMES:  # one cap, under every name the client used (or the deployment's name)
        params.pop(name, None)
    params.update(dict.fromkeys(limit_names, max_output))
    if params.get("n") is None:
        params.pop("n", None)
    usage_requested = bool((options or {}).get("include_usage"))
    if stream:
        params["stream_options"] = {**(options or {}), "include_usage": True}  # usage is always recorded
    return ChatRequest(
        params=params,
        messages=messages,
        stream=stream,
        usage_requested=usage_requested,
        max_output_tokens=max_output,
        choices=choices,
        input_tokens=input_tokens,
        input_bound=input_bound,
        extra_tokens=extra_tokens,
        extra_bound=extra_bound,
    )


def police_unsigned_body(
    body: bytes,
    content_type: str,
    models: tuple[str, ...],
    max_tokens: int | None,
    parameters: tuple[str, ...] = (),
) -> bytes:
    """An SW1 app's policy on a body its backend did not sign: models, one output cap, n of 1, `parameters`.

    Besides the structural parameters only `parameters` pass ("*" allows any): `prediction`, `service_tier`,
    `audio`, `web_search_options` ... would raise the price past the token cap.

    Returns the body to forward, always re-serialised from what was checked: forwarding the client's bytes
    would let `{"model": "pricey", "model": "allowed"}` pass our parser (last wins) and reach a provider
    whose parser keeps the first.
    """
    doc = parse_json_body(body, content_type)
    if "*" not in parameters:
        for name in doc:
            if name not in STRUCTURAL_PARAMETERS and name not in parameters:
                shown = name if len(name) <= 40 and name.isprintable() else repr(name[:40])
                raise BadRequestError(f"parameter {shown} is not allowed for this app", param=shown)
    if models:
        model = doc.get("model")
        if not isinstance(model, str) or model not in models:
            raise PolicyViolationError("model is not allowed for this app", param="model")
    if (_int_field(doc, "n", 1, MAX_N) or 1) > 1:
        raise PolicyViolationError("n exceeds the cap of 1 for unsigned bodies", param="n")
    if max_tokens is not None:
        requested = {n: v for n in _TOKEN_LIMIT_NAMES if (v := _int_field(doc, n, 1, MAX_TOKENS_LIMIT))}
        if requested and min(requested.values()) > max_tokens:
            name = min(requested, key=lambda n: requested[n])
            raise PolicyViolationError(f"{name} exceeds the cap of {max_tokens} for this app", param=name)
        effective = min([max_tokens, *requested.values()])
        for name in _TOKEN_LIMIT_NAMES:
            doc.pop(name, None)
        doc.update(dict.fromkeys(requested or ["max_tokens"], effective))
    return json.dumps(doc).encode()
