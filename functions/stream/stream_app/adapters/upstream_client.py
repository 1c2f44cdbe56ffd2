"""The provider over urllib3: keep-alive connections, retries before the first byte only, raw bytes after.

No SDK: the Stream function forwards a body it has already validated and relays the provider's bytes, so
a client library's models would cost import time and CPU per request for nothing (docs/adr/0007).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from sigstream.adapters.per_process import PerProcess
from sigstream.core.errors import (
    BadRequestError,
    RateLimitedError,
    SigstreamError,
    UpstreamError,
    UpstreamTimeoutError,
)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Waiting for the provider is billed Lambda time, and the caller's own SDK retries a 429 we return:
# the gateway absorbs only short waits and passes longer Retry-After values through.
RETRY_WAIT_BUDGET_SECONDS = 2.0
# Providers and NAT gateways drop idle connections silently; one idle longer than this is not reused.
IDLE_SECONDS = 50.0
READ_SIZE = 65536
USER_AGENT = "sigstream/0.1"


class _BudgetedRetry(Retry):
    """urllib3's retry policy, bounded by a total wait per request and never after a read timeout.

    A read timeout means the provider may already be generating (and billing) an answer; a refused
    connection, a dropped keep-alive connection or a 429/5xx status means it is not.
    """

    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})

    def __init__(self, *args: Any, deadline: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self._planned = 0.0

    def new(self, **kwargs: Any) -> _BudgetedRetry:
        """A copy for the next attempt, keeping the request's deadline."""
        retry = super().new(**kwargs)
        retry.deadline = self.deadline
        return retry

    def get_backoff_time(self) -> float:
        """Full jitter: uniform in [0, factor * 2**n], capped."""
        attempts = len(self.history)
        if attempts == 0:
            return 0.0
        return random.uniform(0, min(self.backoff_max, self.backoff_factor * 2**attempts))  # noqa: S311

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> _BudgetedRetry:
        """Count the attempt; refuse to retry when its wait would exceed what is left of the budget."""
        if isinstance(error, ReadTimeoutError):
            raise MaxRetryError(_pool, url, error) from error
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        wait = None
        if response is not None and response.status in self.RETRY_AFTER_STATUS_CODES:
            wait = _retry_after_seconds(response.headers.get("retry-after"))
        if wait is None:
            wait = retry.get_backoff_time()
        if time.monotonic() + wait > self.deadline:
            raise MaxRetryError(_pool, url, error)
        retry._planned = wait
        return retry

    def sleep(self, response: Any = None) -> None:
        """Sleep the wait planned (and checked against the budget) when the attempt was counted."""
        if self._planned > 0:
            time.sleep(self._planned)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime

        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def failure(exc: BaseException) -> SigstreamError:
    """A transport failure as our error (never echoing the request, which carries the key)."""
    reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    if isinstance(reason, NewConnectionError):
        return UpstreamError("the provider is unreachable")
    if isinstance(reason, (ConnectTimeoutError, ReadTimeoutError, TimeoutError)):
        return UpstreamTimeoutError("the provider did not answer in time")
    return UpstreamError("the provider is unavailable")


def status_error(status: int, headers: Mapping[str, str], body: bytes) -> SigstreamError:
    """A provider's refusal as our OpenAI-shaped error."""
    if status == 429:
        wait = _retry_after_seconds(headers.get("retry-after"))
        return RateLimitedError("the provider is rate limiting requests", retry_after=math.ceil(wait or 1))
    if status in (401, 403):
        return UpstreamError("the provider refused the gateway's credentials")
    if 400 <= status < 500:
        message = "the provider rejected the request"
        try:
            detail = json.loads(body).get("error", {}).get("message")
            if isinstance(detail, str) and detail:
                message = detail
        except (ValueError, AttributeError):
            pass
        return BadRequestError(f"provider: {message[:300]}", param=None)
    if status == 504:
        return UpstreamTimeoutError("the provider did not answer in time")
    return UpstreamError("the provider is unavailable")


class UpstreamResponse:
    """A provider response whose body is read as it arrives; transport errors come out as our errors."""

    def __init__(self, raw: urllib3.BaseHTTPResponse) -> None:
        self._raw = raw
        self.status = raw.status
        self.headers: Mapping[str, str] = raw.headers

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes, unchanged, in the pieces the socket delivers."""
        read1 = self._raw.read1
        try:
            while data := read1(READ_SIZE):
                yield data
        except (HTTPError, OSError) as exc:
            self.close()
            raise failure(exc) from exc

    def read(self, limit: int | None = None) -> bytes:
        """The whole body (or its first `limit` bytes)."""
        try:
            return self._raw.read(limit)
        except (HTTPError, OSError) as exc:
            self.close()
            raise failure(exc) from exc

    def close(self) -> None:
        """Done with it: a fully read connection goes back to the pool, any other one is closed."""
        if not self._raw.closed:
            self._raw.close()  # unread body: the connection cannot be reused
        self._raw.release_conn()


class UpstreamClient:
    """POSTs to an OpenAI-compatible provider; one connection pool per process."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        retry_wait_budget: float = RETRY_WAIT_BUDGET_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        pool_factory: Callable[[], urllib3.PoolManager] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # The read timeout bounds every wait on the socket: for the headers and between streamed chunks.
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=timeout)
        self.max_retries = max_retries
        self.retry_wait_budget = retry_wait_budget
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._pools = PerProcess(pool_factory or self._new_pool)
        self._last_used = clock()
        self.requests = 0  # attempts are counted by the server; this counts calls (benchmarks)

    @staticmethod
    def _new_pool() -> urllib3.PoolManager:
        # A few hosts at most (provider, SW1 upstreams); a few threads at most per host.
        return urllib3.PoolManager(num_pools=8, maxsize=4, block=False, retries=False)

    def _pool(self) -> urllib3.PoolManager:
        pools = self._pools.get()
        now = self._clock()
        if now - self._last_used > self.idle_seconds:
            pools.clear()  # every pooled connection has been idle at least this long
        self._last_used = now
        return pools

    def _retry(self, retries: int, *, after_send: bool) -> _BudgetedRetry:
        return _BudgetedRetry(
            total=retries,
            connect=retries,
            read=0 if after_send else retries,
            status=0 if after_send else retries,
            redirect=0,
            other=0,
            allowed_methods=None,  # POST included: only failures before the provider works are retried
            status_forcelist=() if after_send else RETRY_STATUSES,
            backoff_factor=0.25,
            backoff_max=1.0,
            raise_on_status=False,
            raise_on_redirect=False,
            respect_retry_after_header=not after_send,
            deadline=self._clock() + self.retry_wait_budget,
        )

    def _send(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str], retry: _BudgetedRetry
    ) -> UpstreamResponse:
        self.requests += 1
        try:
            raw = self._pool().urlopen(
                method,
                url,
                body=body,
                headers=dict(headers),
                retries=retry,
                redirect=False,
                timeout=self.timeout,
                preload_content=False,
                decode_content=False,
            )
        except (HTTPError, OSError) as exc:
            raise failure(exc) from exc
        return UpstreamResponse(raw)

    def _headers(self, api_key: str, accept: str) -> dict[str, str]:
        return {
            "authorization": f"Bearer {api_key}",
            "content-type": "application/json",
            "accept": accept,
            "accept-encoding": "identity",  # relayed as is: never recompressed, never decompressed
            "user-agent": USER_AGENT,
        }

    def _checked(self, response: UpstreamResponse) -> UpstreamResponse:
        if 200 <= response.status < 300:
            return response
        try:
            body = response.read(65536)  # an error body is short; a hostile one is not read in full
        except SigstreamError:
            body = b""
        finally:
            response.close()
        raise status_error(response.status, response.headers, body)

    def open_chat(self, api_key: str, params: Mapping[str, Any]) -> UpstreamResponse:
        """POST /chat/completions; returns once the provider answered with a success status."""
        accept = "text/event-stream" if params.get("stream") else "application/json"
        body = json.dumps(params, separators=(",", ":")).encode()
        response = self._send(
            "POST",
            self.base_url + "/chat/completions",
            body,
            self._headers(api_key, accept),
            self._retry(self.max_retries, after_send=False),
        )
        return self._checked(response)

    def post_json(self, path: str, api_key: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """A non-streaming JSON POST to the provider (moderation, summaries), with the same retries."""
        body = json.dumps(doc, separators=(",", ":")).encode()
        response = self._checked(
            self._send(
                "POST",
                self.base_url + path,
                body,
                self._headers(api_key, "application/json"),
                self._retry(self.max_retries, after_send=False),
            )
        )
        try:
            data = response.read()
        finally:
            response.close()
        try:
            result = json.loads(data)
        except ValueError as exc:
            raise UpstreamError("the provider sent a malformed answer") from exc
        if not isinstance(result, dict):
            raise UpstreamError("the provider sent a malformed answer")
        return result

    def moderate(self, api_key: str, text: str) -> bool:
        """Whether the provider's moderation endpoint flags the text."""
        result = self.post_json("/moderations", api_key, {"input": text})
        return any(isinstance(r, dict) and r.get("flagged") for r in result.get("results") or [])

    def forward(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """Pass a request through as is (SW1); only connection failures are retried, nothing after sending."""
        headers = {"accept-encoding": "identity", "user-agent": USER_AGENT, **headers}
        return self._send(method, url, body, headers, self._retry(self.max_retries, after_send=True))
