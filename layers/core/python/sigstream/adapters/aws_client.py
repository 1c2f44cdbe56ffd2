"""A small client for AWS JSON-protocol APIs (DynamoDB, Secrets Manager) over keep-alive HTTP.

It exists for cold start: importing boto3/botocore and loading their service models costs more than
the whole rest of the Stream function's init. Retries throttling and 5xx with jittered backoff.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sigstream.core.sigv4 import sign_headers

_RETRYABLE = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
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


DYNAMODB = ServiceProtocol("dynamodb", "DynamoDB_20120810", "application/x-amz-json-1.0")
SECRETS_MANAGER = ServiceProtocol("secretsmanager", "secretsmanager", "application/x-amz-json-1.1")


class AwsServiceError(Exception):
    """An AWS API error: `code` is the exception name (e.g. ConditionalCheckFailedException)."""

    def __init__(self, code: str, message: str, status: int, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.body = dict(body or {})

    @property
    def retryable(self) -> bool:
        """Throttling, 5xx and connection failures are worth retrying."""
        return self.code in _RETRYABLE or self.status >= 500 or self.status == 0


@dataclass(frozen=True)
class Credentials:
    """Static credentials, as Lambda puts them in the environment."""

    access_key: str
    secret_key: str
    session_token: str | None = None


class AwsJsonClient:
    """Calls `<TargetPrefix>.<Operation>` with SigV4, one keep-alive connection per thread."""

    def __init__(
        self,
        protocol: ServiceProtocol,
        *,
        region: str,
        credentials: Credentials,
        endpoint: str | None = None,
        timeout: float = 5.0,
        max_attempts: int = 4,
        base_delay: float = 0.025,
        max_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.protocol = protocol
        self.region = region
        self.credentials = credentials
        url = urlsplit(endpoint or f"https://{protocol.signing_name}.{region}.amazonaws.com")
        self._secure = url.scheme == "https"
        self._host = url.netloc
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._local = threading.local()
        self.requests = 0  # counted for benchmarks: AWS requests per chat turn

    @property
    def endpoint(self) -> str:
        """Where calls go (for logs)."""
        return f"{'https' if self._secure else 'http'}://{self._host}"

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            conn = cls(self._host, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _send(self, operation: str, body: bytes) -> tuple[int, bytes]:
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers = sign_headers(
            access_key=self.credentials.access_key,
            secret_key=self.credentials.secret_key,
            session_token=self.credentials.session_token,
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
            conn.request("POST", "/", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            raise AwsServiceError("ConnectionError", str(exc), 0) from exc
        if response.will_close:
            self._drop_connection()
        return response.status, data

    def call(self, operation: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Call an operation; retries retryable failures with full-jitter exponential backoff."""
        body = json.dumps(payload).encode()
        for attempt in range(1, self.max_attempts + 1):
            try:
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
            except AwsServiceError as exc:
                if not exc.retryable or attempt == self.max_attempts:
                    raise
            # Full jitter (AWS architecture blog): spreads retries of many clients throttled at once.
            self._sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt)))  # noqa: S311
        raise AssertionError("unreachable")


# DynamoDB throttles by design under bursts; like botocore's DynamoDB policy, retry it longer.
MAX_ATTEMPTS = {"dynamodb": 10, "secretsmanager": 4}


def client_from_environment(protocol: ServiceProtocol, env: Mapping[str, str], **kwargs: Any) -> AwsJsonClient:
    """A client configured from Lambda's environment (credentials, region, endpoint overrides)."""
    kwargs.setdefault("max_attempts", MAX_ATTEMPTS.get(protocol.signing_name, 4))
    # The SDKs' standard names: AWS_ENDPOINT_URL_<service id, spaces as underscores>, then AWS_ENDPOINT_URL.
    service_env = {"secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER"}.get(  # pragma: allowlist secret
        protocol.signing_name, "AWS_ENDPOINT_URL_" + protocol.signing_name.upper()
    )
    return AwsJsonClient(
        protocol,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        credentials=Credentials(
            env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", ""), env.get("AWS_SESSION_TOKEN")
        ),
        endpoint=env.get(service_env) or env.get("AWS_ENDPOINT_URL"),
        **kwargs,
    )
