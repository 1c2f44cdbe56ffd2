"""The provider over http.client: keep-alive connections, retries before the first byte only, raw bytes after.

No SDK and no third-party HTTP library: the Stream function forwards a body it has already validated and
relays the provider's bytes. Measured against urllib3, the standard library costs nothing to import (urllib3:
~27 ms), about half the CPU per request and less per streamed chunk (docs/adr/0007-upstream-client.md).
"""

from __future__ import annotations

import http.client
import io
import json
import math
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from sigstream.adapters.per_process import PerProcess
from sigstream.adapters.tls import client_context
from sigstream.core.errors import (
    BadRequestError,
    RateLimitedError,
    SigstreamError,
    UpstreamError,
    UpstreamTimeoutError,
)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
# Waiting for the provider is billed Lambda time, and the caller's own SDK retries a 429 we return:
# the gateway absorbs only short waits and passes longer Retry-After values through.
RETRY_WAIT_BUDGET_SECONDS = 2.0
# A Retry-After beyond a day is a provider's mistake, not advice to pass on to a client.
MAX_RETRY_AFTER_SECONDS = 86400.0
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 1.0
# Providers and NAT gateways drop idle connections silently; one idle longer than this is not reused.
IDLE_SECONDS = 50.0
READ_SIZE = 65536
USER_AGENT = "sigstream/0.1"
# A reused connection that the provider had already closed fails like this before any byte comes back.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.BadStatusLine)

Key = tuple[str, str, int]


class _AttemptFailedError(Exception):
    """An attempt failed before any response byte; `error` is what to report if it is not retried."""

    def __init__(self, error: SigstreamError, *, sent: bool, reused: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.sent = sent  # the request went out (on a connection that then failed)
        self.reused = reused  # on a kept-alive connection (the provider may have closed it while idle)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds, fractional too, or an HTTP date), at most a day; None if unreadable."""
    if not value:
        return None
    value = value.strip()
    # ASCII digits only: str.isdigit() also accepts "²" or "٣", which float() refuses or reads as another number.
    if value.isascii() and value.replace(".", "", 1).isdigit():
        seconds = float(value)  # a huge value is inf here, not an error
    else:
        try:
            from email.utils import parsedate_to_datetime  # loaded by http.client already

            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class ProviderStatusError(Exception):
    """The provider answered with an error status: the cause behind our error, logged by type and status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status


def status_error(status: int, headers: Mapping[str, str], body: bytes, secret: str = "") -> SigstreamError:
    # `headers` has lower-case names; `secret` (the provider key) is never part of a message.
    """A provider's refusal as our OpenAI-shaped error (the provider's Retry-After passed through)."""
    if status == 429:
        wait = retry_after_seconds(headers.get("retry-after"))
        return RateLimitedError("the provider is rate limiting requests", retry_after=math.ceil(wait or 1))
    if status in (401, 403):
        return UpstreamError("the provider refused the gateway's credentials")
    if 400 <= status < 500:
        message = "the provider rejected the request"
        try:
            detail = json.loads(body).get("error", {}).get("message")
            if isinstance(detail, str) and detail:
                message = detail.replace(secret, "[redacted]") if secret else detail
        except (ValueError, AttributeError, RecursionError):
            pass
        return BadRequestError(f"provider: {message[:300]}", param=None)
    if status == 504:
        return UpstreamTimeoutError("the provider did not answer in time")
    return UpstreamError("the provider is unavailable")


class _DeadlineReader(io.RawIOBase):
    """The socket's bytes, with every wait cut short at `deadline` (time.monotonic()) while one is set.

    The socket timeout bounds each read; a provider sending a byte just before each timeout would never
    hit it. With a deadline the reads add up to at most the time left.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._io = sock.makefile("rb", buffering=0)  # keeps the socket open while the response is read
        self._sock = sock
        self.idle = sock.gettimeout()  # the timeout of one read
        self.deadline: float | None = None

    def readable(self) -> bool:
        """Always: it is a reader."""
        return True

    def readinto(self, buffer: Any) -> int | None:
        """One read from the socket, within the deadline."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the provider's answer ran past its deadline")
            self._sock.settimeout(left if self.idle is None else min(self.idle, left))
        return self._io.readinto(buffer)

    def rearm(self) -> None:
        """Back to the plain per-read timeout (a deadline may have shortened it)."""
        if self.deadline is None:
            self._sock.settimeout(self.idle)

    def close(self) -> None:
        """Release the socket (the connection owns it)."""
        self._io.close()
        super().close()


class _ProviderResponse(http.client.HTTPResponse):
    """http.client's response, but interim 1xx answers are skipped and the headers have one timeout in all.

    http.client skips only `100 Continue`: a `103 Early Hints` or `102 Processing` would be taken for the
    answer (a 502, or a 1xx status passed through to an SW1 client) and the real answer left unread.
    """

    def __init__(
        self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: str | None = None
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()
        self._reader = _DeadlineReader(sock)
        self.fp = io.BufferedReader(self._reader)
        self.body_deadline: float | None = None  # for the body (the invocation's end); none by default

    def begin(self) -> None:
        """Read the status line and headers of the final answer, all within the socket's timeout."""
        if self.headers is not None:
            return
        idle = self._reader.idle
        self._reader.deadline = None if idle is None else time.monotonic() + idle
        super().begin()
        for _ in range(20):  # a provider sending 1xx forever still meets the deadline
            if not (100 <= self.status < 200 and self.status != 101):
                break
            self.headers = self.msg = None
            super().begin()
        self._reader.deadline = self.body_deadline

    def limit(self, deadline: float | None) -> None:
        """Stop reading the body at `deadline` (time.monotonic()), the moment the invocation must end."""
        self.body_deadline = self._reader.deadline = deadline


class _Pool:
    """Idle keep-alive connections of one process: one per thread and host."""

    def __init__(self) -> None:
        self.local = threading.local()

    def idle(self) -> dict[Key, tuple[http.client.HTTPConnection, float]]:
        idle: dict[Key, tuple[http.client.HTTPConnection, float]] = self.local.__dict__.setdefault("idle", {})
        return idle


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed (or broken) by the other side."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class UpstreamResponse:
    """A provider response whose body is read as it arrives; transport errors come out as our errors."""

    def __init__(
        self,
        response: http.client.HTTPResponse,
        release: Callable[[bool], None],
        sock: socket.socket | None = None,
    ) -> None:
        self._response = response
        self._release = release
        self._released = False
        self._sock = sock
        self.aborted = False
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self._inflate: Any = None  # a zlib decompressor once decode() found a compressed body

    def decode(self) -> None:
        """Undo a gzip/deflate Content-Encoding (sent although we asked for identity), for a body we parse."""
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return
        if encoding not in ("gzip", "x-gzip", "deflate"):
            self.close()
            raise UpstreamError(f"the provider sent a {encoding[:20]}-encoded answer although asked for identity")
        import zlib  # only for a provider that ignores accept-encoding

        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib framing, told by its header

    def _inflated(self, data: bytes, final: bool) -> bytes:
        try:
            out: bytes = self._inflate.decompress(data)
            return out + self._inflate.flush() if final else out
        except Exception as exc:  # zlib.error: not what the header said
            self.close()
            raise UpstreamError("the provider sent a malformed compressed answer") from exc

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes, unchanged (or decoded, after decode()), in the pieces the socket delivers."""
        if self._inflate is not None:
            for data in self._raw_chunks():
                if out := self._inflated(data, final=False):
                    yield out
            if tail := self._inflated(b"", final=True):
                yield tail
            return
        yield from self._raw_chunks()

    def _raw_chunks(self) -> Iterator[bytes]:
        read1 = self._response.read1
        try:
            while data := read1(READ_SIZE):
                yield data
        except TimeoutError as exc:
            self.close()
            if not self.aborted:
                raise UpstreamTimeoutError("the provider stopped sending in time") from exc
        except (http.client.HTTPException, OSError, ValueError) as exc:  # ValueError: read after an abort
            self.close()
            if not self.aborted:
                raise UpstreamError("the provider's stream broke off") from exc

    def abort(self) -> None:
        """From any thread: end the transfer now; a read blocked on the socket returns, the provider sees it close.

        Only the socket is shut down here (thread-safe, unlike closing the buffered response, which waits for
        the reader's lock); the reading thread then ends `chunks()` quietly and closes the response itself.
        """
        self.aborted = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def read(self, limit: int | None = None) -> bytes:
        """The whole body (or its first `limit` bytes)."""
        try:
            data = self._response.read(limit)
        except TimeoutError as exc:
            self.close()
            raise UpstreamTimeoutError("the provider did not answer in time") from exc
        except (http.client.HTTPException, OSError) as exc:
            self.close()
            raise UpstreamError("the provider's answer broke off") from exc
        return data if self._inflate is None else self._inflated(data, final=True)

    def close(self) -> None:
        """Done with it: a fully read connection is kept for the next request, any other one is closed."""
        if not self._released:
            self._released = True
            response = self._response
            # read1 leaves a Content-Length body open once it is all read (read() would have closed it).
            complete = response.isclosed() or response.length == 0
            response.close()  # the response only: the socket stays with the connection
            self._release(complete and not response.will_close)


class UpstreamClient:
    """Requests to an OpenAI-compatible provider over keep-alive connections made per process and thread."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        retry_wait_budget: float = RETRY_WAIT_BUDGET_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout  # every wait on the socket: for the headers and between streamed chunks
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.retry_wait_budget = retry_wait_budget
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._sleep = sleep
        self._pools = PerProcess(_Pool)  # a forked worker never shares its parent's sockets
        self.requests = 0  # attempts sent (benchmarks, tests)
        # When the current invocation must stop reading (time.monotonic()); the handler sets it per invocation.
        # Lambda Managed Instances do not stop a timed-out invocation, and standard Lambda stops it without
        # a word: either way a provider that keeps a stream open must not outlast the function.
        self.deadline: float | None = None

    # --- connections -------------------------------------------------------------------------------------

    def _checkout(self, key: Key) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection still worth using, or a new (unconnected) one; and whether it is reused."""
        pool = self._pools.get()
        idle = pool.idle().pop(key, None)
        if idle is not None:
            conn, since = idle
            if self._clock() - since <= self.idle_seconds and not _dropped(conn):
                return conn, True
            conn.close()
        scheme, host, port = key
        fresh = (
            http.client.HTTPSConnection(host, port, timeout=self.connect_timeout, context=client_context())
            if scheme == "https"
            else http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        )
        fresh.response_class = _ProviderResponse
        return fresh, False

    def _release(self, key: Key, conn: http.client.HTTPConnection, reusable: bool) -> None:
        if not reusable:
            conn.close()  # unread body, or the provider is closing it: never reuse
            return
        old = self._pools.get().idle().get(key)
        if old is not None:
            old[0].close()
        self._pools.get().idle()[key] = (conn, self._clock())

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            # Not retried: another handshake meets the same certificate (the cause names it in the log).
            raise UpstreamError("the provider's TLS certificate could not be verified") from exc
        except TimeoutError as exc:
            conn.close()
            raise _AttemptFailedError(UpstreamTimeoutError("the provider did not answer in time"), sent=False) from exc
        except OSError as exc:
            conn.close()
            raise _AttemptFailedError(UpstreamError("the provider is unreachable"), sent=False) from exc
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each request leaves at once

    # --- one attempt -------------------------------------------------------------------------------------

    def _attempt(
        self,
        method: str,
        key: Key,
        target: str,
        body: bytes,
        headers: Mapping[str, str],
        on_sent: Callable[[], None] | None = None,
    ) -> UpstreamResponse:
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left <= 0:
            raise UpstreamTimeoutError("the function ran out of time before the provider was asked")
        conn, reused = self._checkout(key)
        if conn.sock is None:
            self._connect(conn)
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout if left is None else min(self.timeout, left))
        self.requests += 1
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            if on_sent is not None:
                on_sent()  # the request is out: work started now overlaps the provider's wait, not our send
            response = conn.getresponse()
        except TimeoutError as exc:
            conn.close()
            # The request was sent: the provider may be generating (and billing) an answer. Not retried.
            raise UpstreamTimeoutError("the provider did not answer in time") from exc
        except _STALE as exc:
            conn.close()
            raise _AttemptFailedError(
                UpstreamError("the provider closed the connection"), sent=True, reused=reused
            ) from exc
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise UpstreamError("the provider is unavailable") from exc
        if isinstance(response, _ProviderResponse):
            response.limit(self.deadline)
        return UpstreamResponse(response, lambda reusable: self._release(key, conn, reusable), conn.sock)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))  # noqa: S311

    def _send(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        retry_sent: bool,
        on_sent: Callable[[], None] | None = None,
    ) -> UpstreamResponse:
        """Send with retries: refused connections always; 429/5xx and dropped keep-alives when `retry_sent`.

        Every wait (backoff or the provider's Retry-After) must fit in what is left of the budget; a
        response that would need a longer wait is returned as it is, so its Retry-After reaches the client.
        """
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        key: Key = (scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = self._clock() + self.retry_wait_budget
        attempt = 0
        stale_retried = False
        while True:
            try:
                response = self._attempt(method, key, target, body, headers, on_sent)
            except _AttemptFailedError as failed:
                if failed.sent and not retry_sent:
                    raise failed.error from failed
                if failed.reused and not stale_retried:
                    stale_retried = True  # the keep-alive race: once, at once, on a fresh connection
                    continue
                wait = self._backoff(attempt)
                if attempt >= self.max_retries or self._clock() + wait > deadline:
                    raise failed.error from failed
            else:
                if not (retry_sent and response.status in RETRY_STATUSES) or attempt >= self.max_retries:
                    return response
                asked = retry_after_seconds(response.headers.get("retry-after"))
                wait = (
                    asked if asked is not None and response.status in RETRY_AFTER_STATUSES else self._backoff(attempt)
                )
                if self._clock() + wait > deadline:
                    return response  # too long to wait here: the caller passes the Retry-After on
                response.read(65536)
                response.close()
            attempt += 1
            if wait > 0:
                self._sleep(wait)

    # --- requests ----------------------------------------------------------------------------------------

    def _headers(self, api_key: str, accept: str, body: bytes) -> dict[str, str]:
        return {
            "authorization": f"Bearer {api_key}",
            "content-type": "application/json",
            "content-length": str(len(body)),
            "accept": accept,
            "accept-encoding": "identity",  # relayed as is: never recompressed, never decompressed
            "user-agent": USER_AGENT,
        }

    def _checked(self, response: UpstreamResponse, api_key: str) -> UpstreamResponse:
        if 200 <= response.status < 300:
            response.decode()  # we parse this body: a compressed one is decoded (or refused, naming it)
            return response
        try:
            response.decode()
            body = response.read(65536)  # an error body is short; a hostile one is not read in full
        except SigstreamError:
            body = b""
        finally:
            response.close()
        raise status_error(response.status, response.headers, body, api_key) from ProviderStatusError(response.status)

    def open_chat(
        self, api_key: str, params: Mapping[str, Any], on_sent: Callable[[], None] | None = None
    ) -> UpstreamResponse:
        """POST /chat/completions; returns once the provider answered with a success status.

        `on_sent` is called each time the request has been written (before its answer is awaited).
        """
        accept = "text/event-stream" if params.get("stream") else "application/json"
        body = json.dumps(params, separators=(",", ":")).encode()
        url = self.base_url + "/chat/completions"
        headers = self._headers(api_key, accept, body)
        return self._checked(self._send("POST", url, body, headers, retry_sent=True, on_sent=on_sent), api_key)

    def post_json(self, path: str, api_key: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """A non-streaming JSON POST to the provider (moderation, summaries), with the same retries."""
        body = json.dumps(doc, separators=(",", ":")).encode()
        headers = self._headers(api_key, "application/json", body)
        response = self._checked(self._send("POST", self.base_url + path, body, headers, retry_sent=True), api_key)
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
        """Pass a request through as is (SW1): any status back, streamed; nothing is retried once sent."""
        sent = {"accept-encoding": "identity", "user-agent": USER_AGENT, **headers, "content-length": str(len(body))}
        return self._send(method, url, body, sent, retry_sent=False)
