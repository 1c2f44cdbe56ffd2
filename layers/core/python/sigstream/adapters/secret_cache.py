"""Secrets Manager values cached with a TTL; a stale value keeps serving while the service is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sigstream.adapters.aws_client import AwsJsonClient, AwsServiceError
from sigstream.adapters.per_process import PerProcess
from sigstream.core.errors import ServiceUnavailableError
from sigstream.core.settings import ConfigError, SigningKeys, parse_signing_keys


@dataclass
class _Entry:
    value: str
    fetched_at: float


class SecretCache:
    """get() returns a value at most `ttl` old, or up to `max_stale` old if refreshing fails."""

    def __init__(
        self,
        client: AwsJsonClient,
        ttl: float,
        max_stale: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl = ttl
        self.max_stale = max_stale
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._forced: dict[str, float] = {}  # when each secret was last fetched ahead of its TTL
        self._parsed_keys: tuple[str, SigningKeys] | None = None  # (secret text, its keys): parsed once per value
        # Values cached before a fork stay valid in the workers; the lock must be each worker's own.
        self._lock = PerProcess(threading.Lock)

    def cached(self, secret_id: str) -> str | None:
        """The value when a fresh one is held (no I/O), else None."""
        entry = self._entries.get(secret_id)
        return entry.value if entry and self._clock() - entry.fetched_at < self.ttl else None

    def get(self, secret_id: str) -> str:
        """The secret string; ServiceUnavailableError when none can be had."""
        now = self._clock()
        entry = self._entries.get(secret_id)
        if entry and now - entry.fetched_at < self.ttl:
            return entry.value
        with self._lock.get():  # one refresh at a time; others reuse its result
            entry = self._entries.get(secret_id)
            if entry and now - entry.fetched_at < self.ttl:
                return entry.value
            try:
                value = str(self.client.call("GetSecretValue", {"SecretId": secret_id})["SecretString"])
            except (AwsServiceError, KeyError) as exc:
                if entry and now - entry.fetched_at < self.max_stale:
                    return entry.value
                reason = f"{exc}" if isinstance(exc, AwsServiceError) else "no SecretString in the answer"
                raise ServiceUnavailableError(
                    "a required secret is temporarily unavailable",
                    detail=f"GetSecretValue {secret_id!r} at {self.client.endpoint} failed: {reason}",
                ) from exc
            self._entries[secret_id] = _Entry(value, now)
            return value

    def refresh(self, secret_id: str, min_interval: float) -> bool:
        """Fetch a held value again before its TTL, at most once per `min_interval`; whether it changed."""
        now = self._clock()
        entry = self._entries.get(secret_id)
        last = self._forced.get(secret_id)
        if entry is None or (last is not None and now - last < min_interval):
            return False
        with self._lock.get():
            current = self._entries.get(secret_id)
            if current is not entry:  # another thread fetched it meanwhile
                return current is not None and current.value != entry.value
            self._forced[secret_id] = now  # a failing fetch is not retried on every request either
            try:
                value = str(self.client.call("GetSecretValue", {"SecretId": secret_id})["SecretString"])
            except (AwsServiceError, KeyError):
                return False  # the held value keeps serving, as in get()
            self._entries[secret_id] = _Entry(value, now)
            return value != entry.value

    def signing_keys(self, secret_id: str) -> SigningKeys:
        """The URL signing keys; a malformed secret is a deployment fault (503, cause logged), not a crash."""
        text = self.get(secret_id)
        parsed = self._parsed_keys
        if parsed is not None and parsed[0] == text:
            return parsed[1]
        try:
            keys = parse_signing_keys(text)
        except ConfigError as exc:
            raise ServiceUnavailableError(
                "signing keys are temporarily unavailable", detail=f"secret {secret_id!r}: {exc}"
            ) from exc
        self._parsed_keys = (text, keys)
        return keys
