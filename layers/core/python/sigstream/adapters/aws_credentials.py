"""AWS credentials from the chain Lambda and its variants use: the environment, then the container endpoint.

Lambda puts static session credentials in the environment. Lambda Managed Instances, ECS and EKS Pod
Identity serve them from a container credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI,
with AWS_CONTAINER_AUTHORIZATION_TOKEN or _FILE); those expire and are refreshed before they do, as botocore
does (advisory refresh 15 minutes before expiry, mandatory 10 minutes before).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from sigstream.adapters.per_process import PerProcess
from sigstream.core.settings import ConfigError

ECS_HOST = "169.254.170.2"
# Hosts botocore accepts for a plain-http full URI: the ECS and EKS Pod Identity agents, and loopback.
ALLOWED_HTTP_HOSTS = {ECS_HOST, "169.254.170.23", "fd00:ec2::23", "localhost"}
ADVISORY_REFRESH_SECONDS = 15 * 60
MANDATORY_REFRESH_SECONDS = 10 * 60


class CredentialsError(Exception):
    """Credentials could not be had (the message names the source, never a secret)."""


@dataclass(frozen=True)
class Credentials:
    """One set of credentials; `expires_at` (epoch seconds) is None for credentials that do not expire."""

    access_key: str
    secret_key: str
    session_token: str | None = None
    expires_at: float | None = None


class CredentialProvider(Protocol):
    """Anything that hands out current credentials."""

    def get(self) -> Credentials:
        """Credentials valid now."""
        ...


class StaticCredentials:
    """Credentials that never change (the environment's)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def get(self) -> Credentials:
        """The same credentials every time."""
        return self.credentials


def parse_expiration(text: str) -> float:
    """An ISO 8601 timestamp (`2026-12-01T12:00:00Z`) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _check_full_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    if parts.scheme == "http":
        if host in ALLOWED_HTTP_HOSTS:
            return
        import ipaddress  # only for this check (a cold-start import otherwise)

        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
    raise ConfigError(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to loopback or the ECS/EKS credentials agent"
    )


class ContainerCredentials:
    """Credentials served over HTTP by the container credentials endpoint, refreshed before they expire."""

    def __init__(
        self,
        uri: str,
        *,
        token: str | None = None,
        token_file: str | None = None,
        timeout: float = 2.0,
        attempts: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.uri = uri
        self.token = token
        self.token_file = token_file
        self.timeout = timeout
        self.attempts = attempts
        self._clock = clock
        self._sleep = sleep
        self._current: Credentials | None = None
        self._lock = PerProcess(threading.Lock)
        self.fetches = 0

    def _authorization(self) -> str | None:
        if self.token_file:  # read each time: the agent rotates the file
            try:
                with open(self.token_file, encoding="utf-8") as fh:
                    token = fh.read().strip()
            except OSError as exc:
                raise CredentialsError(f"cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: {exc.strerror}") from exc
        else:
            token = self.token or ""
        if "\r" in token or "\n" in token:
            raise CredentialsError("the container authorization token contains a line break")
        return token or None

    def _fetch_once(self) -> Credentials:
        parts = urlsplit(self.uri)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            from sigstream.adapters.tls import client_context

            conn = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=self.timeout, context=client_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.timeout)
        headers = {"Accept": "application/json", "User-Agent": "sigstream"}
        authorization = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
            response = conn.getresponse()
            body = response.read(65536)
        except (OSError, http.client.HTTPException) as exc:
            raise CredentialsError(f"container credentials endpoint unreachable: {type(exc).__name__}") from exc
        finally:
            conn.close()
        if response.status != 200:
            raise CredentialsError(f"container credentials endpoint answered HTTP {response.status}")
        try:
            doc = json.loads(body)
            credentials = Credentials(
                access_key=str(doc["AccessKeyId"]),
                secret_key=str(doc["SecretAccessKey"]),
                session_token=str(doc["Token"]) if doc.get("Token") else None,
                expires_at=parse_expiration(str(doc["Expiration"])) if doc.get("Expiration") else None,
            )
            # Sent in headers: refused here, a failed fetch (the working ones are kept), not on every request.
            for value in (credentials.access_key, credentials.session_token or ""):
                if "\r" in value or "\n" in value:
                    raise ValueError("a line break in a header value")
                value.encode("latin-1")
            return credentials
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CredentialsError("container credentials endpoint sent a malformed document") from exc

    def _fetch(self) -> Credentials:
        for attempt in range(self.attempts):
            try:
                self.fetches += 1
                return self._fetch_once()
            except CredentialsError:
                if attempt == self.attempts - 1:
                    raise
                self._sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    def _remaining(self, credentials: Credentials) -> float:
        if credentials.expires_at is None:
            return float("inf")
        return credentials.expires_at - self._clock()

    def get(self) -> Credentials:
        """Cached credentials, refreshed when less than 15 minutes are left (required under 10)."""
        current = self._current
        if current is not None and self._remaining(current) > ADVISORY_REFRESH_SECONDS:
            return current
        with self._lock.get():  # one refresh at a time; the others use its result
            current = self._current
            if current is not None and self._remaining(current) > ADVISORY_REFRESH_SECONDS:
                return current
            try:
                fresh = self._fetch()
            except CredentialsError:
                if current is not None and self._remaining(current) > MANDATORY_REFRESH_SECONDS:
                    return current  # advisory window: keep using what still works
                raise
            self._current = fresh
            return fresh


def credentials_from_environment(env: Mapping[str, str]) -> CredentialProvider:
    """The first source in the chain that is configured; ConfigError (loud, at init) when there is none."""
    access_key, secret_key = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if access_key and secret_key:
        return StaticCredentials(Credentials(access_key, secret_key, env.get("AWS_SESSION_TOKEN") or None))
    if access_key or secret_key:
        raise ConfigError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")
    token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") or None
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") or None
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        uri = f"http://{ECS_HOST}{env['AWS_CONTAINER_CREDENTIALS_RELATIVE_URI']}"
        return ContainerCredentials(uri, token=token, token_file=token_file)
    if env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        uri = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        _check_full_uri(uri)
        return ContainerCredentials(uri, token=token, token_file=token_file)
    raise ConfigError(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (as Lambda does), or "
        "AWS_CONTAINER_CREDENTIALS_FULL_URI / AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
    )
