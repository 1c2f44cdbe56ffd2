"""Settings from the environment (one prefix: SIGSTREAM_), parsed once per cold start."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from sigstream.core.sw1 import Sw1App

PREFIX = "SIGSTREAM_"


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


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(_get(env, name, str(default)))
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name} must be an integer") from exc


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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StreamSettings:
        """Parse and validate."""
        moderation = _get(env, "MODERATION", "off")
        if moderation not in ("off", "fail-open", "fail-closed"):
            raise ConfigError(f"{PREFIX}MODERATION must be off, fail-open or fail-closed")
        return cls(
            table=_get(env, "TABLE"),
            signing_keys_secret=_get(env, "SIGNING_KEYS_SECRET"),
            provider_key_secret=_get(env, "PROVIDER_KEY_SECRET"),
            sw1_apps_secret=_get(env, "SW1_APPS_SECRET", ""),
            upstream_base_url=_url(env, "UPSTREAM_BASE_URL").rstrip("/"),
            default_model=_get(env, "DEFAULT_MODEL", "gpt-4o-mini"),
            max_url_lifetime=_int(env, "MAX_URL_LIFETIME", 3600),
            url_clock_skew_seconds=_int(env, "URL_CLOCK_SKEW_SECONDS", 30),
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 20),
            daily_token_budget=_int(env, "DAILY_TOKEN_BUDGET", 0),
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
        )


@dataclass(frozen=True)
class SignSettings:
    """Everything the Sign function reads from its environment."""

    signing_keys_secret: str
    stream_url: str
    max_url_lifetime: int
    secret_ttl_seconds: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SignSettings:
        """Parse and validate; without the Stream URL every issued URL would be relative, so refuse."""
        return cls(
            signing_keys_secret=_get(env, "SIGNING_KEYS_SECRET"),
            stream_url=_url(env, "STREAM_URL"),
            max_url_lifetime=_int(env, "MAX_URL_LIFETIME", 3600),
            secret_ttl_seconds=_int(env, "SECRET_TTL_SECONDS", 300),
        )


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


def parse_sw1_apps(text: str) -> dict[str, Sw1App]:
    """Secret format: {"apps": [{"id", "secret", "proxy" | "allowed_proxies", "headers"}]}."""
    if not text:
        return {}
    try:
        apps = json.loads(text).get("apps", [])
        return {
            app["id"]: Sw1App(
                id=app["id"],
                secret=app["secret"],
                allowed_proxies=tuple(app.get("allowed_proxies") or [app["proxy"]]),
                headers=dict(app.get("headers") or {}),
            )
            for app in apps
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError("SW1 apps secret is malformed") from exc
