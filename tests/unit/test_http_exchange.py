"""The AWS client's HTTP/1.1 exchange: read as http.client reads, over real sockets (plain and TLS)."""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigstream.adapters.http_exchange import (
    KeepAliveConnection,
    ResponseFormatError,
    ServerClosedError,
    parse_head,
    read_answer,
    request_bytes,
)
from tests.tls import self_signed_server_context

NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).filter(
    lambda n: n[0] != "-" and n not in {"content-length", "transfer-encoding", "connection", "keep-alive", "trailer"}
)
VALUES = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, bytes, int, bytes, str]:
    """(1xx interim answers, the answer's wire bytes, status, body, framing)."""
    status = draw(st.sampled_from([200, 201, 400, 403, 404, 413, 429, 500, 503]))
    headers = draw(st.lists(st.tuples(NAMES, VALUES), max_size=6))
    body = draw(st.binary(max_size=3000))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    interim = b"".join(
        b"HTTP/1.1 %d Interim\r\nx-interim: 1\r\n\r\n" % c
        for c in draw(st.lists(st.sampled_from([100, 103]), max_size=2))
    )
    lines = [f"HTTP/1.1 {status} Some Reason", *(f"{n}: {v}" for n, v in headers)]
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
        payload = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\nx-trailer: t\r\n\r\n"
    else:
        lines.append("Connection: close")
        payload = body
    wire = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + payload
    return interim, wire, status, body, framing


class _Bytes(socket.socket):
    """What http.client needs of a socket, over fixed bytes."""

    def __init__(self, data: bytes) -> None:  # no real socket: only makefile() is used
        self.data = data

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        return io.BufferedReader(io.BytesIO(self.data))  # type: ignore[arg-type]


def _by_http_client(wire: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    response = http.client.HTTPResponse(_Bytes(wire), method="POST")
    response.begin()
    headers = {name.lower(): response.getheader(name) or "" for name in response.headers}
    return response.status, headers, response.read(), not response.will_close


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_answers_read_exactly_as_http_client_reads_them(answer: tuple[bytes, bytes, int, bytes, str]) -> None:
    interim, wire, status, body, framing = answer
    ours_end, theirs_end = socket.socketpair()
    with ours_end, theirs_end:
        theirs_end.sendall(interim + wire)
        if framing == "close":
            theirs_end.shutdown(socket.SHUT_WR)
        got, reusable = read_answer(ours_end, "POST")
    # http.client (3.11) skips only 100 Continue; an interim 103 would be its answer: it reads the final one alone.
    expected_status, expected_headers, expected_body, expected_reusable = _by_http_client(wire)
    assert (got.status, got.body) == (expected_status, expected_body) == (status, body)
    assert got.headers == expected_headers
    assert reusable == expected_reusable == (framing != "close")


def test_http_1_0_keeps_the_connection_only_when_it_says_keep_alive() -> None:
    for head, reusable in (
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2", True),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2", False),
    ):
        a, b = socket.socketpair()
        with a, b:
            b.sendall(head + b"\r\n\r\n{}")
            answer, keeps = read_answer(a, "POST")
        assert (answer.body, keeps) == (b"{}", reusable), head


@pytest.mark.parametrize(
    "wire",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70000 + b"\r\n\r\n",
    ],
)
def test_malformed_answers_are_transport_errors(wire: bytes) -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(wire)
        b.shutdown(socket.SHUT_WR)
        with pytest.raises(ResponseFormatError):
            read_answer(a, "POST")


@pytest.mark.parametrize(
    "wire", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", b"HTTP/1.1 200 OK\r\nContent"]
)
def test_a_connection_closed_before_the_answer_is_whole_is_an_error(wire: bytes) -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(wire)
        b.shutdown(socket.SHUT_WR)
        with pytest.raises(ServerClosedError):
            read_answer(a, "POST")


def test_bare_lf_heads_and_folded_headers_are_read() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\nx-a: 1\n  continued") == ("HTTP/1.1", 200, {"x-a": "1 continued"})


def test_a_request_cannot_be_split_by_a_header() -> None:
    for name, value in (("x-amz-security-token", "tok\r\nx-evil: 1"), ("x evil", "1"), ("x-é", "1")):
        with pytest.raises(ValueError, match="cannot be sent"):
            request_bytes("POST", "/", {name: value}, b"{}")
    assert (
        request_bytes("POST", "/", {"host": "h"}, b"{}") == b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\n\r\n{}"
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    close_next: list[bool] = []
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("content-type", "application/x-amz-json-1.0")
        self.send_header("content-length", str(len(body)))
        if type(self).close_next and type(self).close_next.pop(0):
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[ThreadingHTTPServer, Callable[..., KeepAliveConnection]]]:
    _Handler.close_next, _Handler.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    tls: ssl.SSLContext | None = None
    if getattr(request, "param", "plain") == "tls":
        httpd.socket = self_signed_server_context(tmp_path).wrap_socket(httpd.socket, server_side=True)
        tls = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def connect(**kwargs: Any) -> KeepAliveConnection:
        return KeepAliveConnection("127.0.0.1", httpd.server_address[1], timeout=5, tls=tls, **kwargs)

    yield httpd, connect
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("server", ["plain", "tls"], indirect=True)
def test_one_connection_carries_request_after_request(server: tuple[Any, Callable[..., KeepAliveConnection]]) -> None:
    _, connect = server
    conn = connect()
    for i in range(20):
        answer = conn.request("POST", "/", {"host": "127.0.0.1", "x-amz-target": "T"}, b'{"n":%d}' % i)
        assert (answer.status, answer.body) == (200, b'{"n":%d}' % i)
    assert conn.connects == 1
    assert _Handler.seen[0]["accept-encoding"] == "identity"  # never a compressed answer


def test_connection_close_and_a_server_that_dropped_the_idle_socket_mean_a_new_socket(
    server: tuple[Any, Callable[..., KeepAliveConnection]],
) -> None:
    _, connect = server
    conn = connect()
    _Handler.close_next = [True]
    conn.request("POST", "/", {}, b"1")
    conn.request("POST", "/", {}, b"2")
    assert conn.connects == 2
    assert conn._sock is not None
    conn._sock.shutdown(socket.SHUT_RD)  # as if the server had closed it while idle: the socket reads EOF
    assert conn.request("POST", "/", {}, b"3").body == b"3"
    assert conn.connects == 3


def test_a_connection_idle_past_the_limit_is_not_reused(server: tuple[Any, Callable[..., KeepAliveConnection]]) -> None:
    _, connect = server
    now = [0.0]
    conn = connect(idle_seconds=50, clock=lambda: now[0])
    conn.request("POST", "/", {}, b"1")
    now[0] = 49
    conn.request("POST", "/", {}, b"2")
    now[0] = 100
    conn.request("POST", "/", {}, b"3")
    assert conn.connects == 2


def test_a_silent_server_times_out_and_the_socket_is_not_reused() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        conn = KeepAliveConnection("127.0.0.1", listener.getsockname()[1], timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.request("POST", "/", {}, b"{}")
        assert time.monotonic() - started < 3
        assert conn._sock is None


def test_an_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = self_signed_server_context(tmp_path).wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        conn = KeepAliveConnection("127.0.0.1", httpd.server_address[1], timeout=5, tls=ssl.create_default_context())
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.request("POST", "/", {}, b"{}")
    finally:
        httpd.shutdown()
        httpd.server_close()
