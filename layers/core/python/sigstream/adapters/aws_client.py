"""A small client for AWS JSON-protocol APIs (DynamoDB, Secrets Manager) over keep-alive HTTP.

It exists for cold start: importing boto3/botocore and loading their service models costs more than
the whole rest of the Stream function's init (docs/adr/0008-aws-client.md). It does what a Lambda function needs of
botocore: the standard credentials chain (sigstream.adapters.aws_credentials), partition endpoints and
the SDKs' endpoint variables (sigstream.core.aws_endpoints), SigV4, and standard-mode retries: jittered
backoff under a retry quota (a token bucket), so a failing dependency is not hammered by every request.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sigstream.adapters.aws_credentials import (
    CredentialProvider,
    Credentials,
    CredentialsError,
    StaticCredentials,
    credentials_from_environment,
)
from sigstream.adapters.http_exchange import HeaderValueError, KeepAliveConnection
from sigstream.adapters.per_process import PerProcess
from sigstream.adapters.tls import client_context
from sigstream.core.aws_endpoints import configured_endpoint, default_endpoint, signing_host
from sigstream.core.sigv4 import sign_headers

__all__ = [
    "DYNAMODB",
    "SECRETS_MANAGER",
    "AwsJsonClient",
    "AwsServiceError",
    "Credentials",
    "RetryQuota",
    "ServiceProtocol",
    "client_from_environment",
]

_THROTTLING = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
}
_RETRYABLE = _THROTTLING | {
    "InternalServerError",
    "InternalFailure",
    "InternalServiceError",
    "ServiceUnavailable",
    "TransactionInProgressException",
}


@dataclass(frozen=True)
class ServiceProtocol:
    """How one service speaks the JSON protocol."""

    signing_name: str
    target_prefix: str
    content_type: str
    env_id: str  # as boto3 spells the service in AWS_ENDPOINT_URL_<env_id>


DYNAMODB = ServiceProtocol("dynamodb", "DynamoDB_20120810", "application/x-amz-json-1.0", "DYNAMODB")
SECRETS_MANAGER = ServiceProtocol("secretsmanager", "secretsmanager", "application/x-amz-json-1.1", "SECRETS_MANAGER")


class AwsServiceError(Exception):
    """An AWS API error: `code` is the exception name (e.g. ConditionalCheckFailedException)."""

    def __init__(self, code: str, message: str, status: int, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.body = dict(body or {})

    @property
    def retryable(self) -> bool:
        """Throttling, 5xx and connection failures are worth retrying (missing credentials are not)."""
        if self.code == "CredentialsError":
            return False
        return self.code in _RETRYABLE or self.status >= 500 or self.status == 0

    @property
    def throttling(self) -> bool:
        """The service asked us to slow down (cheaper to retry under the quota)."""
        return self.code in _THROTTLING


class RetryQuota:
    """botocore's standard-mode retry quota: retries spend tokens, successes earn them back.

    When a dependency fails for every request, the bucket empties and requests fail fast instead of
    multiplying the load by their retries; it refills as calls succeed again.
    """

    RETRY_COST = 14
    THROTTLING_RETRY_COST = 5
    NO_RETRY_INCREMENT = 1

    def __init__(self, capacity: int = 500) -> None:
        self.capacity = capacity
        self.available = capacity
        self._lock = PerProcess(threading.Lock)

    def acquire(self, throttling: bool) -> int:
        """Tokens for one retry (0: none left, do not retry)."""
        cost = self.THROTTLING_RETRY_COST if throttling else self.RETRY_COST
        with self._lock.get():
            if cost > self.available:
                return 0
            self.available -= cost
            return cost

    def release(self, amount: int) -> None:
        """Give tokens back after a success."""
        if self.available >= self.capacity:
            return
        with self._lock.get():
            self.available = min(self.capacity, self.available + amount)


class AwsJsonClient:
    """Calls `<TargetPrefix>.<Operation>` with SigV4, one keep-alive connection per thread."""

    def __init__(
        self,
        protocol: ServiceProtocol,
        *,
        region: str,
        credentials: Credentials | CredentialProvider,
        endpoint: str | None = None,
        timeout: float = 5.0,
        max_attempts: int = 4,
        base_delay: float = 0.025,
        max_delay: float = 1.0,
        retry_quota: RetryQuota | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.protocol = protocol
        self.region = region
        self.credentials: CredentialProvider = (
            StaticCredentials(credentials) if isinstance(credentials, Credentials) else credentials
        )
        self.endpoint = endpoint or default_endpoint(protocol.signing_name, region)
        url = urlsplit(self.endpoint)
        self._secure = url.scheme == "https"
        self._hostname, self._port = url.hostname or "", url.port
        self._host = signing_host(self.endpoint)  # the Host header, as HTTP clients send it for this URL
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.retry_quota = retry_quota or RetryQuota()
        self._sleep = sleep
        # Per process (a forked worker never shares its parent's socket), then per thread.
        self._local = PerProcess(threading.local)
        self.requests = 0  # counted for benchmarks: AWS requests per chat turn

    def _connection(self) -> KeepAliveConnection:
        local = self._local.get()
        conn: KeepAliveConnection | None = getattr(local, "conn", None)
        if conn is None:
            # One CA bundle load per process, not one per connection.
            tls = client_context() if self._secure else None
            port = self._port or (443 if self._secure else 80)
            conn = KeepAliveConnection(self._hostname, port, timeout=self.timeout, tls=tls)
            local.conn = conn
        return conn

    def _send(self, operation: str, body: bytes) -> tuple[int, bytes]:
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        try:
            credentials = self.credentials.get()
        except CredentialsError as exc:
            raise AwsServiceError("CredentialsError", str(exc), 0) from exc
        headers = sign_headers(
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            session_token=credentials.session_token,
            method="POST",
            host=self._host,
            raw_path="/",
            body=body,
            headers={
                "content-type": self.protocol.content_type,
                "x-amz-target": f"{self.protocol.target_prefix}.{operation}",
            },
            amz_date=amz_date,
            region=self.region,
            service=self.protocol.signing_name,
        )
        conn = self._connection()
        self.requests += 1
        try:
            answer = conn.request("POST", "/", headers, body)
        except OSError as exc:  # the connection is closed; a retry opens a new one
            raise AwsServiceError("ConnectionError", str(exc), 0) from exc
        except HeaderValueError as exc:  # e.g. a session token with a line break: retrying cannot help
            raise AwsServiceError("CredentialsError", "the credentials cannot be sent in a header", 0) from exc
        return answer.status, answer.body

    def _attempt(self, operation: str, body: bytes) -> dict[str, Any]:
        status, data = self._send(operation, body)
        try:
            doc = json.loads(data or b"{}")
        except ValueError:
            doc = None
        if status == 200 and isinstance(doc, dict):
            return doc
        if not isinstance(doc, dict):  # e.g. a proxy's or an overloaded server's HTML/empty 5xx
            raise AwsServiceError(
                "MalformedResponse", f"HTTP {status} without a JSON body", status if status != 200 else 500
            )
        code = str(doc.get("__type", "UnknownError")).rsplit("#", 1)[-1]
        message = str(doc.get("message") or doc.get("Message") or "")
        raise AwsServiceError(code, message, status, doc)

    def call(self, operation: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Call an operation; retries retryable failures with full-jitter backoff while the quota allows."""
        body = json.dumps(payload).encode()
        spent = 0  # tokens of the last retry, returned on success
        for attempt in range(1, self.max_attempts + 1):
            try:
                doc = self._attempt(operation, body)
            except AwsServiceError as exc:
                if not exc.retryable or attempt == self.max_attempts:
                    raise
                spent = self.retry_quota.acquire(exc.throttling)
                if not spent:
                    raise  # the quota is spent: the dependency is failing, do not add load
            else:
                self.retry_quota.release(spent or RetryQuota.NO_RETRY_INCREMENT)
                return doc
            # Full jitter (AWS architecture blog): spreads retries of many clients throttled at once.
            self._sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt)))  # noqa: S311
        raise AssertionError("unreachable")


# DynamoDB throttles by design under bursts; like botocore's DynamoDB policy, retry it longer.
MAX_ATTEMPTS = {"dynamodb": 10, "secretsmanager": 4}


def client_from_environment(
    protocol: ServiceProtocol,
    env: Mapping[str, str],
    credentials: CredentialProvider | None = None,
    **kwargs: Any,
) -> AwsJsonClient:
    """A client configured as the SDKs configure one from Lambda's environment.

    Region from AWS_REGION / AWS_DEFAULT_REGION; endpoint from AWS_ENDPOINT_URL_<SERVICE> / AWS_ENDPOINT_URL
    or the partition's default; credentials from the chain (pass one provider to share it between clients).
    Raises ConfigError when no credentials are configured.
    """
    kwargs.setdefault("max_attempts", MAX_ATTEMPTS.get(protocol.signing_name, 4))
    return AwsJsonClient(
        protocol,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        credentials=credentials or credentials_from_environment(env),
        endpoint=configured_endpoint(env, protocol.env_id),
        **kwargs,
    )
