"""The provider, through the openai SDK: retries and timeouts before the first byte, raw SSE after."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from sigstream.core.errors import (
    BadRequestError,
    RateLimitedError,
    SigstreamError,
    UpstreamError,
    UpstreamTimeoutError,
)

_import_done = threading.Event()


def preload() -> None:
    """Import the SDK on a background thread at init, overlapping it with AWS calls."""

    def run() -> None:
        try:
            import openai  # noqa: F401
        finally:
            _import_done.set()

    threading.Thread(target=run, name="preload-openai", daemon=True).start()


def map_error(exc: BaseException) -> SigstreamError:
    """SDK/transport failures -> our errors (never echoing the provider key)."""
    import httpx2  # the SDK's transport; raw stream reads raise its errors
    import openai

    if isinstance(exc, openai.RateLimitError):
        retry = exc.response.headers.get("retry-after", "1")
        return RateLimitedError(
            "the provider is rate limiting requests", retry_after=int(retry) if retry.isdigit() else 1
        )
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return UpstreamError("the provider refused the gateway's credentials")
    if isinstance(exc, openai.APIStatusError) and exc.status_code < 500:
        message = exc.message if isinstance(exc.message, str) else "the provider rejected the request"
        return BadRequestError(f"provider: {message[:300]}", param=None)
    if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException)):
        return UpstreamTimeoutError("the provider did not answer in time")
    return UpstreamError("the provider is unavailable")


class Upstream:
    """One OpenAI client per provider key (keys rotate through the secret cache), on a stdlib transport."""

    def __init__(self, base_url: str, timeout: float, connect_timeout: float, max_retries: int) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self._clients: dict[str, Any] = {}
        self._http: Any = None
        self._lock = threading.Lock()

    def http_client(self) -> Any:
        """The SDK's HTTP client (also used by SW1 pass-through), created once."""
        with self._lock:
            if self._http is None:
                import openai

                from stream_app.adapters.stdlib_transport import StdlibTransport

                self._http = openai.DefaultHttpxClient(
                    transport=StdlibTransport(),
                    # The read timeout is the idle timeout between streamed chunks.
                    timeout=openai.Timeout(self.timeout, connect=self.connect_timeout),
                    follow_redirects=False,
                )
            return self._http

    def client(self, api_key: str) -> Any:
        """The SDK client for this key (created once)."""
        http_client = self.http_client()
        with self._lock:
            if api_key not in self._clients:
                import openai

                self._clients = {
                    api_key: openai.OpenAI(
                        api_key=api_key, base_url=self.base_url, max_retries=self.max_retries, http_client=http_client
                    )
                }
            return self._clients[api_key]

    def open_chat(self, api_key: str, params: dict[str, Any]) -> Any:
        """POST /chat/completions; returns the raw streaming response once its status is a success.

        The body goes as JSON unchanged (no SDK model transform: it costs a millisecond per request and
        would drop provider-specific fields). The SDK still retries 429/5xx with backoff before this returns.
        """
        import httpx2

        client = self.client(api_key)
        return client.post("/chat/completions", cast_to=httpx2.Response, body=params, stream=True)

    def moderate(self, api_key: str, text: str) -> bool:
        """Whether the provider's moderation endpoint flags the text."""
        result = self.client(api_key).moderations.create(input=text)
        return any(r.flagged for r in result.results)


def iter_raw(response: Any) -> Iterator[bytes]:
    """The raw body bytes of an entered streaming response, as they arrive."""
    # Identity-encoded (see stdlib_transport), so the transport's own stream is the body: reading it
    # directly skips httpx2's per-chunk bookkeeping, the largest cost per streamed token after parsing.
    yield from response.stream
