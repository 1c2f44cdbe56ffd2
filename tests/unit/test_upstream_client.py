"""The upstream client against a real HTTP server on loopback: reuse, retries and their budget, errors, fork."""

from __future__ import annotations

import gzip
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sigstream.core.errors import BadRequestError, RateLimitedError, UpstreamError, UpstreamTimeoutError
from stream_app.adapters.upstream_client import UpstreamClient, retry_after_seconds, status_error
from tests.tls import self_signed_server_context

SSE = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'


class Script:
    """What the server answers, one entry per request (the last one repeats), and what it saw."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = [{}]
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def next(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.requests.append(request)
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = self.server.script.next(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
                "peer": self.client_address,
            }
        )
        if answer.get("hang"):
            time.sleep(answer["hang"])
        if "raw" in answer:  # the provider's bytes exactly, status line and all, piece by piece
            for piece in answer["raw"]:
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(answer.get("interval", 0))
            return
        status = answer.get("status", 200)
        self.send_response(status)
        for name, value in answer.get("headers", {}).items():
            self.send_header(name, value)
        if answer.get("cut_after") is not None:  # headers and part of the body, then the connection drops
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            part = SSE[: answer["cut_after"]]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        data = answer.get("body", SSE if status == 200 else b'{"error":{"message":"nope"}}')
        self.send_header("Content-Length", str(len(data)))
        if answer.get("close"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)
        if answer.get("drop_idle"):  # a keep-alive timeout: closed after answering, without saying so
            self.wfile.flush()
            self.close_connection = True


@pytest.fixture()
def server() -> Iterator[tuple[str, Script]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.script = Script()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", httpd.script  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def client(base_url: str, **kwargs: Any) -> UpstreamClient:
    options: dict[str, Any] = {"timeout": 2, "connect_timeout": 1, "max_retries": 2, **kwargs}
    return UpstreamClient(base_url, **options)


def chat(upstream: UpstreamClient) -> bytes:
    response = upstream.open_chat("sk-test", {"model": "m", "stream": True, "messages": []})
    try:
        return b"".join(response.chunks())
    finally:
        response.close()


def test_the_body_goes_as_json_with_the_key_and_the_stream_comes_back_unchanged(server: tuple[str, Script]) -> None:
    base, script = server
    assert chat(client(base)) == SSE
    sent = script.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert json.loads(sent["body"]) == {"model": "m", "stream": True, "messages": []}
    assert sent["headers"]["authorization"] == "Bearer sk-test"
    assert sent["headers"]["accept-encoding"] == "identity"


def test_one_keep_alive_connection_serves_invocation_after_invocation(server: tuple[str, Script]) -> None:
    base, script = server
    upstream = client(base)
    for _ in range(3):
        chat(upstream)
    assert len({r["peer"] for r in script.requests}) == 1


def test_an_idle_connection_is_not_reused_after_the_idle_limit(server: tuple[str, Script]) -> None:
    base, script = server
    now = [0.0]
    upstream = client(base, idle_seconds=50, clock=lambda: now[0])
    chat(upstream)
    now[0] += 10
    chat(upstream)
    now[0] += 60
    chat(upstream)
    peers = [r["peer"] for r in script.requests]
    assert peers[0] == peers[1] != peers[2]


def test_a_connection_the_provider_closed_is_replaced_without_an_error(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"close": True}, {}]
    upstream = client(base, max_retries=0)
    chat(upstream)
    assert chat(upstream) == SSE
    assert len(script.requests) == 2


def test_a_kept_connection_the_provider_dropped_while_idle_is_not_reused(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"drop_idle": True}, {}]
    upstream = client(base, max_retries=0)
    chat(upstream)
    time.sleep(0.1)  # the provider's FIN arrives
    assert chat(upstream) == SSE
    assert len(script.requests) == 2 and upstream.requests == 2  # no failed attempt on the dead connection


def test_a_429_with_a_short_retry_after_is_retried(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"status": 429, "headers": {"Retry-After": "0"}}, {}]
    assert chat(client(base)) == SSE
    assert len(script.requests) == 2


def test_a_429_longer_than_the_budget_is_passed_through_at_once_with_its_retry_after(
    server: tuple[str, Script],
) -> None:
    base, script = server
    script.answers = [{"status": 429, "headers": {"Retry-After": "7"}}]
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as caught:
        chat(client(base, retry_wait_budget=2.0))
    assert caught.value.retry_after == 7 and caught.value.headers() == {"retry-after": "7"}
    assert len(script.requests) == 1
    assert time.monotonic() - started < 1.5  # did not sleep 7 s (nor 14, as the SDK did)


def test_retry_after_as_an_http_date_is_honoured(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"status": 429, "headers": {"Retry-After": formatdate(time.time() + 30, usegmt=True)}}]
    with pytest.raises(RateLimitedError) as caught:
        chat(client(base))
    assert 28 <= caught.value.retry_after <= 31


def test_waits_stop_when_the_total_budget_is_spent(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"status": 503, "headers": {"Retry-After": "1"}}]
    with pytest.raises(UpstreamError):
        chat(client(base, max_retries=5, retry_wait_budget=1.5))
    assert len(script.requests) == 2  # one wait of 1 s fits in 1.5 s; a second does not


def test_5xx_is_retried_with_backoff_then_reported_as_502(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"status": 500}]
    with pytest.raises(UpstreamError) as caught:
        chat(client(base, max_retries=2))
    assert caught.value.status == 502
    assert len(script.requests) == 3


def test_a_read_timeout_before_the_headers_is_not_retried(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"hang": 1.5}]
    with pytest.raises(UpstreamTimeoutError):
        chat(client(base, timeout=0.5))
    assert len(script.requests) == 1  # the provider may already be generating (and billing) an answer


def test_a_refused_connection_is_retried_then_a_502() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens here now
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        chat(client(f"http://127.0.0.1:{port}/v1"))
    assert caught.value.message == "the provider is unreachable"
    assert time.monotonic() - started < 2.5


def test_nothing_is_retried_after_the_first_byte(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"cut_after": 20}, {}]
    upstream = client(base)
    response = upstream.open_chat("sk-test", {"stream": True})
    chunks = response.chunks()
    assert next(chunks) == SSE[:20]
    with pytest.raises(UpstreamError):
        list(chunks)
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "status,body,error,message",
    [
        (401, b'{"error":{"message":"Incorrect API key sk-xx"}}', UpstreamError, "refused the gateway's credentials"),
        (400, b'{"error":{"message":"max_tokens is too large"}}', BadRequestError, "provider: max_tokens is too large"),
        (404, b"<html>not json</html>", BadRequestError, "provider: the provider rejected the request"),
    ],
)
def test_refusals_become_openai_shaped_errors_without_echoing_secrets(
    server: tuple[str, Script], status: int, body: bytes, error: type[Exception], message: str
) -> None:
    base, script = server
    script.answers = [{"status": status, "body": body}]
    with pytest.raises(error) as caught:
        chat(client(base))
    assert message in str(caught.value) and "sk-" not in str(caught.value)


def test_moderation_is_a_json_post_through_the_same_client(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"body": b'{"results":[{"flagged":true}]}'}, {"body": b'{"results":[{"flagged":false}]}'}]
    upstream = client(base)
    assert upstream.moderate("sk-test", "bad") is True
    assert upstream.moderate("sk-test", "fine") is False
    assert [r["path"] for r in script.requests] == ["/v1/moderations"] * 2
    assert json.loads(script.requests[0]["body"]) == {"input": "bad"}
    assert len({r["peer"] for r in script.requests}) == 1


def test_pass_through_returns_any_status_and_never_retries_it(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"status": 503, "headers": {"Retry-After": "0"}, "body": b"busy"}]
    response = client(base).forward("POST", base + "/chat/completions", b"{}", {"content-type": "application/json"})
    assert response.status == 503 and b"".join(response.chunks()) == b"busy"
    response.close()
    assert len(script.requests) == 1


def test_a_forked_worker_opens_its_own_connection(server: tuple[str, Script]) -> None:
    base, script = server
    upstream = client(base)
    chat(upstream)  # the parent holds a pooled keep-alive connection now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: must not read from (or write to) the parent's socket
        os.close(read_end)
        try:
            ok = chat(upstream) == SSE
        except BaseException:
            ok = False
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"1" and status == 0
    os.close(read_end)
    assert chat(upstream) == SSE  # the parent's connection is intact
    peers = [r["peer"] for r in script.requests]
    assert peers[0] == peers[2] != peers[1]


def _head(status: str, *headers: str) -> bytes:
    return f"HTTP/1.1 {status}\r\n".encode() + b"".join(h.encode() + b"\r\n" for h in headers) + b"\r\n"


OK_SSE = _head("200 OK", "Content-Type: text/event-stream", f"Content-Length: {len(SSE)}") + SSE


@pytest.mark.parametrize("interim", ["103 Early Hints\r\nLink: </app.css>; rel=preload", "102 Processing"])
def test_interim_1xx_answers_are_skipped_for_the_real_one(server: tuple[str, Script], interim: str) -> None:
    base, script = server
    script.answers = [{"raw": [f"HTTP/1.1 {interim}\r\n\r\n".encode(), OK_SSE]}, {}]
    upstream = client(base)
    assert chat(upstream) == SSE
    assert chat(upstream) == SSE  # and the connection is in step for the next request
    response = upstream.forward("POST", base + "/chat/completions", b"{}", {})
    assert response.status == 200  # an SW1 client never gets a 1xx as the answer
    response.close()


def test_headers_trickled_a_byte_at_a_time_still_time_out_in_one_timeout(server: tuple[str, Script]) -> None:
    base, script = server
    head = _head("200 OK", "X-Pad: " + "a" * 30, "Content-Length: 0")
    script.answers = [{"raw": [bytes([b]) for b in head], "interval": 0.05}]  # each read well inside 0.5 s
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        chat(client(base, timeout=0.5))
    assert time.monotonic() - started < 1.2  # not len(head) x 0.05 s = 2.7 s
    assert len(script.requests) == 1  # sent, so not retried


def test_a_stream_is_cut_at_the_invocations_deadline(server: tuple[str, Script]) -> None:
    base, script = server
    keepalives = [_head("200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked")]
    keepalives += [b"3\r\n:\n\n\r\n"] * 100  # an SSE comment every 50 ms, for 5 s: never idle for a timeout
    script.answers = [{"raw": keepalives, "interval": 0.05}]
    upstream = client(base, timeout=2)
    upstream.deadline = time.monotonic() + 0.6
    response = upstream.open_chat("sk-test", {"stream": True})
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        for _ in response.chunks():
            pass
    assert time.monotonic() - started < 1.0
    upstream.deadline = time.monotonic() - 1
    with pytest.raises(UpstreamTimeoutError):
        upstream.open_chat("sk-test", {"stream": True})  # no time left: not even sent
    assert len(script.requests) == 1


def test_a_compressed_answer_despite_identity_is_decoded_or_refused_by_name(server: tuple[str, Script]) -> None:
    base, script = server
    packed = gzip.compress(SSE)
    gz = _head("200 OK", "Content-Type: text/event-stream", "Content-Encoding: gzip", f"Content-Length: {len(packed)}")
    br = _head("200 OK", "Content-Type: text/event-stream", "Content-Encoding: br", "Content-Length: 3")
    script.answers = [{"raw": [gz + packed]}, {"raw": [br + b"xyz"]}, {"raw": [gz + packed]}]
    upstream = client(base)
    assert chat(upstream) == SSE
    with pytest.raises(UpstreamError, match="br-encoded"):
        chat(upstream)
    response = upstream.forward("POST", base + "/chat/completions", b"{}", {})  # SW1: bytes (and header) as sent
    assert b"".join(response.chunks()) == packed and response.headers["content-encoding"] == "gzip"
    response.close()


@pytest.mark.parametrize(
    "value,seconds",
    [
        ("7", 7.0),
        ("7.5", 7.5),
        (" 3 ", 3.0),
        ("9" * 400, 86400.0),  # inf: capped, not an OverflowError (a 500)
        ("99999999999", 86400.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 86400.0),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("-3", None),
        ("\u00b2", None),  # latin-1 "²": isdigit() but not a number float() reads
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_values_providers_send(value: str, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds
    error = status_error(429, {"retry-after": value}, b"")
    assert isinstance(error, RateLimitedError) and 1 <= error.retry_after <= 86400


def test_an_error_body_never_crashes_the_mapping_nor_echoes_the_key() -> None:
    deep = status_error(400, {}, b"[" * 65536)  # json.loads raises RecursionError on this
    assert isinstance(deep, BadRequestError) and deep.message == "provider: the provider rejected the request"
    echoed = status_error(400, {}, b'{"error":{"message":"bad request for key sk-live-123"}}', "sk-live-123")
    assert "sk-live-123" not in echoed.message and "[redacted]" in echoed.message


def test_a_provider_with_an_untrusted_certificate_is_refused_once_not_retried(tmp_path: Path) -> None:
    context = self_signed_server_context(tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    handshakes: list[str] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                context.wrap_socket(conn, server_side=True).close()
                handshakes.append("accepted")
            except (ssl.SSLError, OSError) as exc:
                handshakes.append(type(exc).__name__)

    threading.Thread(target=accept, daemon=True).start()
    upstream = client(f"https://127.0.0.1:{listener.getsockname()[1]}/v1")
    with pytest.raises(UpstreamError, match="certificate could not be verified") as caught:
        chat(upstream)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    time.sleep(0.1)
    listener.close()
    assert upstream.requests == 0 and len(handshakes) == 1 and "accepted" not in handshakes


def test_on_sent_runs_once_the_request_is_written_on_every_attempt(server: tuple[str, Script]) -> None:
    base, script = server
    script.answers = [{"status": 429, "headers": {"Retry-After": "0"}}, {}]
    seen: list[int] = []
    response = client(base).open_chat(
        "sk-test", {"model": "m", "stream": True, "messages": []}, on_sent=lambda: seen.append(len(script.requests))
    )
    try:
        assert b"".join(response.chunks()) == SSE
    finally:
        response.close()
    assert len(seen) == 2 and len(script.requests) == 2  # the turn's first write starts after the first send
