"""Settings from the environment (one prefix: SIGSTREAM_), parsed once per cold start."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sigstream.core.sw1 import DEFAULT_APP_RATE_LIMIT, DEFAULT_URL_RATE_LIMIT, Sw1App

PREFIX = "SIGSTREAM_"
# Parameters forwarded by default besides the structural ones (model, messages, stream, stream_options,
# max_tokens, max_completion_tokens, n): they change the answer, not its price beyond the token caps.
DEFAULT_FORWARDED_PARAMETERS = (
    "temperature",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
)
# Not forwarded by default: `user` / `safety_identifier` name the end user to the provider's abuse systems, so
# a client choosing them could get someone else flagged; `service_tier`, `store`, `metadata`, `modalities`,
# `audio`, `prediction`, `web_search_options` change the price or keep data at the provider.
# A turn is one DynamoDB transaction (at most 100 items): the conversation item, the reply, the client's messages.
MAX_REQUEST_MESSAGES_LIMIT = 98
# Content-part types a request may carry (besides plain string content); see ChatPolicy.content_parts.
CONTENT_PART_TYPES = ("text", "image_url", "input_audio", "file")
DEFAULT_CONTENT_PARTS = ("text", "image_url")
_PARAMETER_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9._:/@-]{1,100}")
_APP_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class ConfigError(Exception):
    """A setting is missing or malformed (a deployment error, not a client error)."""


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    # Empty counts as unset: `sam local invoke` passes "" for every value it cannot resolve locally.
    value = env.get(PREFIX + name) or default
    if value is None:
        raise ConfigError(f"{PREFIX}{name} is not set")
    return value


def _url(env: Mapping[str, str], name: str) -> str:
    value = _get(env, name)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{PREFIX}{name} must be an absolute http(s) URL")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int = 0, high: int = 2**63) -> int:
    try:
        value = int(_get(env, name, str(default)))
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name} must be an integer") from exc
    if not low <= value <= high:
        raise ConfigError(f"{PREFIX}{name} must be from {low} to {high}")
    return value


def _names(env: Mapping[str, str], name: str, default: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    items = tuple(item.strip() for item in _get(env, name, default).split(",") if item.strip())
    bad = [item for item in items if item != "*" and not pattern.fullmatch(item)]
    if bad:
        raise ConfigError(f"{PREFIX}{name} has an invalid entry: {bad[0][:40]!r}")
    return items


@dataclass(frozen=True)
class StreamSettings:
    """Everything the Stream function reads from its environment."""

    table: str
    signing_keys_secret: str
    provider_key_secret: str
    sw1_apps_secret: str
    upstream_base_url: str
    default_model: str
    max_url_lifetime: int
    url_clock_skew_seconds: int
    rate_limit_per_minute: int
    daily_token_budget: int
    history_max_messages: int
    history_token_budget: int
    retention_days: int
    max_body_bytes: int
    secret_ttl_seconds: int
    upstream_timeout_seconds: int
    upstream_connect_timeout_seconds: int
    upstream_max_retries: int
    moderation: str
    coalesce_ms: int
    log_content: bool
    allowed_models: tuple[str, ...] = ()
    max_output_tokens: int = 1024
    max_input_tokens: int = 8000
    max_input_chars: int = 32000
    max_request_messages: int = 32
    forwarded_parameters: tuple[str, ...] = DEFAULT_FORWARDED_PARAMETERS
    output_tokens_parameter: str = "max_tokens"
    content_parts: tuple[str, ...] = DEFAULT_CONTENT_PARTS
    summary_max_tokens: int = 256  # the rolling summary's output cap; 0 = no summary

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StreamSettings:
        """Parse and validate."""
        moderation = _get(env, "MODERATION", "off")
        if moderation not in ("off", "fail-open", "fail-closed"):
            raise ConfigError(f"{PREFIX}MODERATION must be off, fail-open or fail-closed")
        output_parameter = _get(env, "OUTPUT_TOKENS_PARAMETER", "max_tokens")
        if output_parameter not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError(f"{PREFIX}OUTPUT_TOKENS_PARAMETER must be max_tokens or max_completion_tokens")
        return cls(
            table=_get(env, "TABLE"),
            signing_keys_secret=_get(env, "SIGNING_KEYS_SECRET"),
            provider_key_secret=_get(env, "PROVIDER_KEY_SECRET"),
            sw1_apps_secret=_get(env, "SW1_APPS_SECRET", ""),
            upstream_base_url=_url(env, "UPSTREAM_BASE_URL").rstrip("/"),
            default_model=_get(env, "DEFAULT_MODEL", "gpt-4o-mini"),
            max_url_lifetime=_int(env, "MAX_URL_LIFETIME", 3600),
            url_clock_skew_seconds=_int(env, "URL_CLOCK_SKEW_SECONDS", 30),
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 20, 1),
            daily_token_budget=_int(env, "DAILY_TOKEN_BUDGET", 200_000),
            history_max_messages=_int(env, "HISTORY_MAX_MESSAGES", 20),
            history_token_budget=_int(env, "HISTORY_TOKEN_BUDGET", 6000),
            retention_days=_int(env, "RETENTION_DAYS", 30),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 1_048_576),
            secret_ttl_seconds=_int(env, "SECRET_TTL_SECONDS", 300),
            upstream_timeout_seconds=_int(env, "UPSTREAM_TIMEOUT_SECONDS", 30),
            upstream_connect_timeout_seconds=_int(env, "UPSTREAM_CONNECT_TIMEOUT_SECONDS", 5),
            upstream_max_retries=_int(env, "UPSTREAM_MAX_RETRIES", 2),
            moderation=moderation,
            coalesce_ms=_int(env, "COALESCE_MS", 0),
            log_content=_get(env, "LOG_CONTENT", "false").lower() == "true",
            allowed_models=_names(env, "ALLOWED_MODELS", "", _MODEL_NAME),
            max_output_tokens=_int(env, "MAX_OUTPUT_TOKENS", 1024, 1, 10_000_000),
            max_input_tokens=_int(env, "MAX_INPUT_TOKENS", 8000, 1),
            max_input_chars=_int(env, "MAX_INPUT_CHARS", 32000, 1),
            max_request_messages=_int(env, "MAX_REQUEST_MESSAGES", 32, 1, MAX_REQUEST_MESSAGES_LIMIT),
            forwarded_parameters=_names(
                env, "FORWARDED_PARAMETERS", ",".join(DEFAULT_FORWARDED_PARAMETERS), _PARAMETER_NAME
            ),
            output_tokens_parameter=output_parameter,
            content_parts=_content_parts(env),
            summary_max_tokens=_int(env, "SUMMARY_MAX_TOKENS", 256, 0, 100_000),
        )


def _content_parts(env: Mapping[str, str]) -> tuple[str, ...]:
    parts = _names(env, "CONTENT_PARTS", ",".join(DEFAULT_CONTENT_PARTS), _PARAMETER_NAME)
    unknown = sorted(set(parts) - set(CONTENT_PART_TYPES))
    if unknown or "text" not in parts:
        raise ConfigError(f"{PREFIX}CONTENT_PARTS must include text and name only {', '.join(CONTENT_PART_TYPES)}")
    return parts


@dataclass(frozen=True)
class SignSettings:
    """Everything the Sign function reads from its environment."""

    signing_keys_secret: str
    stream_url: str
    max_url_lifetime: int
    secret_ttl_seconds: int
    # The Stream function's models (default first), or None when not told: then the Stream function alone refuses.
    models: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SignSettings:
        """Parse and validate; without the Stream URL every issued URL would be relative, so refuse."""
        models = None
        if env.get(PREFIX + "DEFAULT_MODEL"):
            models = (_get(env, "DEFAULT_MODEL"), *_names(env, "ALLOWED_MODELS", "", _MODEL_NAME))
        return cls(
            signing_keys_secret=_get(env, "SIGNING_KEYS_SECRET"),
            stream_url=_url(env, "STREAM_URL"),
            max_url_lifetime=_int(env, "MAX_URL_LIFETIME", 3600),
            secret_ttl_seconds=_int(env, "SECRET_TTL_SECONDS", 300),
            models=models,
        )

    def forbidden_models(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The names a URL would sign that the Stream function refuses anyway (none when its models are unknown)."""
        if self.models is None or "*" in self.models:
            return ()
        return tuple(name for name in names if name not in self.models)


@dataclass(frozen=True)
class SigningKeys:
    """Key ids to secrets, and which id signs new URLs."""

    active: str
    keys: Mapping[str, bytes]


def parse_signing_keys(text: str) -> SigningKeys:
    """Secret format: {"active": "k2", "k1": "<secret>", "k2": "<secret>"}; retired ids stay until removed."""
    try:
        doc = json.loads(text)
        keys = {kid: value.encode() for kid, value in doc.items() if kid != "active"}
        active = doc["active"]
    except (ValueError, KeyError, AttributeError) as exc:
        raise ConfigError("signing keys secret is malformed") from exc
    if active not in keys or any(len(v) < 16 for v in keys.values()):
        raise ConfigError("signing keys secret must name an active key; keys need 16+ characters")
    return SigningKeys(active, keys)


def _optional_int(app: Mapping[str, Any], key: str, default: int | None, low: int = 1) -> int | None:
    value = app.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"SW1 app {key} must be an integer of at least {low}")
    return value


def _sw1_app(app: Mapping[str, Any]) -> Sw1App:
    if not isinstance(app["id"], str) or not _APP_ID.fullmatch(app["id"]):
        raise ConfigError("SW1 app ids are 1 to 128 characters of A-Z a-z 0-9 . _ : @ -")
    models = app.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) and _MODEL_NAME.fullmatch(m) for m in models):
        raise ConfigError("SW1 app models must be a list of model names")
    parameters = app.get("parameters", list(DEFAULT_FORWARDED_PARAMETERS))
    if not isinstance(parameters, list) or not all(
        isinstance(p, str) and (p == "*" or _PARAMETER_NAME.fullmatch(p)) for p in parameters
    ):
        raise ConfigError("SW1 app parameters must be a list of parameter names")
    return Sw1App(
        id=app["id"],
        secret=str(app["secret"]),
        allowed_proxies=tuple(app.get("allowed_proxies") or [app["proxy"]]),
        headers=dict(app.get("headers") or {}),
        max_lifetime=_optional_int(app, "max_lifetime", None),
        rate_limit_per_minute=_optional_int(app, "rate_limit_per_minute", DEFAULT_APP_RATE_LIMIT) or 0,
        url_rate_limit_per_minute=_optional_int(app, "url_rate_limit_per_minute", DEFAULT_URL_RATE_LIMIT) or 0,
        models=tuple(models),
        max_tokens=_optional_int(app, "max_tokens", None),
        parameters=tuple(parameters),
    )


def parse_sw1_apps(text: str) -> dict[str, Sw1App]:
    """Secret format: {"apps": [{"id", "secret", "proxy" | "allowed_proxies", "headers", policy...}]}.

    Policy keys (all optional): "max_lifetime" (seconds; default the deployment's SIGSTREAM_MAX_URL_LIFETIME),
    "rate_limit_per_minute" (the whole app), "url_rate_limit_per_minute" (one signed URL), and for bodies the
    app did not sign, "models" (allow-list), "max_tokens" (cap, also the default) and "parameters" (what such a
    body may send besides model, messages, stream, stream_options, the token caps and n; default the Stream
    route's default forwarded parameters; "*" any), enforced when "models" or "max_tokens" is set. See docs/security.md.
    """
    if not text:
        return {}
    try:
        apps = json.loads(text).get("apps", [])
        return {app["id"]: _sw1_app(app) for app in apps}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError("SW1 apps secret is malformed") from exc
