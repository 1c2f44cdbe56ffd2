"""The AWS client against a hostile or odd endpoint: scripted answers over real sockets, and lost answers from moto."""

from __future__ import annotations

import http.client
import os
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sigstream.adapters.aws_client import DYNAMODB, AwsJsonClient, AwsServiceError, Credentials
from sigstream.adapters.http_exchange import KeepAliveConnection, ResponseFormatError, content_length
from sigstream.core.errors import AlreadyUsedError
from stream_app.adapters.history_store import HistoryStore

CREDS = Credentials("AKIDEXAMPLE", "secret")
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{}"


class ScriptedServer:
    """Answers each request it reads with the next scripted bytes, then closes that connection."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head)
                conn.sendall(self.answers.pop(0))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    made: list[ScriptedServer] = []
    yield made
    for server in made:
        server.close()


def _client(server: ScriptedServer) -> AwsJsonClient:
    return AwsJsonClient(
        DYNAMODB,
        region="us-east-1",
        credentials=CREDS,
        endpoint=f"http://127.0.0.1:{server.port}",
        sleep=lambda _: None,
    )


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u00b2", "1\u00b3"])
def test_a_content_length_in_non_ascii_digits_is_a_malformed_answer(value: str) -> None:
    # str.isdigit() is true for superscript digits (Latin-1 0xB2, 0xB3, 0xB9); int() refuses them.
    with pytest.raises(ResponseFormatError):
        content_length({"content-length": value})


def test_a_garbled_content_length_is_a_transport_failure_that_is_retried_not_a_credentials_error(
    scripted: list[ScriptedServer],
) -> None:
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n{}", OK])
    scripted.append(server)
    assert _client(server).call("GetItem", {}) == {}
    assert len(server.requests) == 2


@pytest.mark.parametrize("token", ["tok\r\nx-injected: 1", "tok\nx-injected: 1", "tok\u20ac"])
def test_a_session_token_that_cannot_be_sent_is_refused_before_any_byte_and_not_retried(
    scripted: list[ScriptedServer], token: str
) -> None:
    server = ScriptedServer([OK])
    scripted.append(server)
    client = AwsJsonClient(
        DYNAMODB,
        region="us-east-1",
        credentials=Credentials("AKIDEXAMPLE", "secret", token),
        endpoint=f"http://127.0.0.1:{server.port}",
        sleep=lambda _: None,
    )
    with pytest.raises(AwsServiceError) as caught:
        client.call("GetItem", {})
    assert caught.value.code == "CredentialsError" and not caught.value.retryable
    assert client.requests == 1 and server.requests == []


def _read_request(conn: socket.socket) -> tuple[bytes, dict[str, str], bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += conn.recv(65536)
    return head, headers, body


class LossyFront:
    """A keep-alive front to moto server that forwards every request but drops the answers `lose` picks.

    A dropped answer is what a reset NAT, a Lambda freeze or a proxy timeout does after the service has
    applied the request: the connection closes with no answer.
    """

    def __init__(self, moto_port: int, lose: Callable[[str], bool]) -> None:
        self.moto_port, self.lose = moto_port, lose
        self.targets: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        moto = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=10)
        with conn:
            while (request := _read_request(conn)) is not None:
                _, headers, body = request
                target = headers.get("x-amz-target", "")
                self.targets.append(target)
                moto.request("POST", "/", body, {k: v for k, v in headers.items() if k != "content-length"})
                answer = moto.getresponse()
                data = answer.read()
                if self.lose(target):
                    return  # applied by the service; the answer never arrives
                conn.sendall(
                    b"HTTP/1.1 %d OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: %d\r\n\r\n%s"
                    % (answer.status, len(data), data)
                )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def moto_dynamodb() -> Iterator[int]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",  # pragma: allowlist secret
    ).create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    yield port
    server.stop()


def _store_behind(front: LossyFront) -> HistoryStore:
    client = AwsJsonClient(
        DYNAMODB, region="us-east-1", credentials=CREDS, endpoint=f"http://127.0.0.1:{front.port}", sleep=lambda _: None
    )
    return HistoryStore(client, "t", 30)


def test_a_first_use_whose_answer_was_lost_is_not_reported_as_already_used(moto_dynamodb: int) -> None:
    lost: list[str] = []

    def lose_first_put(target: str) -> bool:
        if target.endswith(".PutItem") and not lost:
            lost.append(target)
            return True
        return False

    front = LossyFront(moto_dynamodb, lose_first_put)
    try:
        store = _store_behind(front)
        store.consume_nonce("nonce-lost-answer", 2_000_000_000)  # the client's one and only use
        assert lost and front.targets.count("DynamoDB_20120810.PutItem") == 2  # it was sent again
        with pytest.raises(AlreadyUsedError):  # and the URL is still single-use
            store.consume_nonce("nonce-lost-answer", 2_000_000_000)
    finally:
        front.close()


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_a_kept_alive_socket_is_reused_in_a_process_with_more_than_1024_descriptors() -> None:
    # select() refuses descriptors above 1023; a process with many open streams or files must still reuse.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))  # fails loudly if it cannot
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spare = [os.dup(0) for _ in range(1100)]
    try:
        conn = KeepAliveConnection("127.0.0.1", server.server_address[1], timeout=5)
        for _ in range(3):
            assert conn.request("POST", "/", {"host": "127.0.0.1"}, b"").body == b"{}"
        assert conn._sock is not None and conn._sock.fileno() > 1024
        assert conn.connects == 1
        conn.close()
    finally:
        for fd in spare:
            os.close(fd)
        server.shutdown()
        server.server_close()
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


CHUNKED_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1\r\n{\r\n1;x=y\r\n}\r\n0\r\nx-amz-crc32: 1\r\n\r\n"
)


@pytest.mark.parametrize("answer", [OK, CHUNKED_OK], ids=["length", "chunked"])
def test_a_connection_dropped_at_any_byte_of_the_answer_is_retried_on_a_new_one(
    scripted: list[ScriptedServer], answer: bytes
) -> None:
    for cut in range(len(answer)):
        server = ScriptedServer([answer[:cut], answer])
        scripted.append(server)
        assert _client(server).call("GetItem", {}) == {}, cut
        assert len(server.requests) == 2, cut


def _endless(prefix: bytes, unit: bytes) -> int:
    """A server that, after `prefix`, sends `unit` forever (until the client goes away); its port."""
    sock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = sock.accept()
        sock.close()
        with conn:
            _read_request(conn)
            try:
                conn.sendall(prefix)
                while True:
                    conn.sendall(unit * 256)
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("prefix", "unit"),
    [
        (b"", b"HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n"),  # interim answers without end
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", b"x-trailer: t\r\n"),  # trailers without end
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"1;" + b"e" * 4000 + b"\r\nx\r\n",
        ),  # 1 byte per 4 KB
    ],
    ids=["interim", "trailers", "tiny-chunks"],
)
def test_an_answer_that_never_ends_is_cut_off_at_a_bounded_size(prefix: bytes, unit: bytes) -> None:
    conn = KeepAliveConnection("127.0.0.1", _endless(prefix, unit), timeout=5)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            conn.request("POST", "/", {"host": "127.0.0.1"}, b"{}")
            outcome.append(None)
        except BaseException as exc:  # the outcome is what the test looks at
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    assert outcome and isinstance(outcome[0], ResponseFormatError), outcome


def test_a_reservation_whose_answer_was_lost_is_counted_and_held_once(moto_dynamodb: int) -> None:
    lost: list[str] = []

    def lose_first_update(target: str) -> bool:
        if target.endswith(".UpdateItem") and not lost:
            lost.append(target)
            return True
        return False

    front = LossyFront(moto_dynamodb, lose_first_update)
    try:
        store = _store_behind(front)
        now = 1_800_000_000.0
        reservation = store.reserve("RATE#lost-answer", now, 10, 100_000, 1000)
        assert lost and front.targets.count("DynamoDB_20120810.UpdateItem") == 2  # it was sent again
        store.settle(reservation, 0)  # the turn was refused later and used nothing
        item = store.client.call(
            "GetItem",
            {"TableName": "t", "Key": {"pk": {"S": "RATE#lost-answer"}, "sk": {"S": f"DAY#{reservation.day}"}}},
        )["Item"]
        minute = f"m{int(now) // 60 % 1440:04d}"
        assert (item[minute]["N"], item["tokens"]["N"], item["held"]["N"]) == ("1", "0", "0")
        for _ in range(9):  # the minute still admits exactly its limit of requests
            store.reserve("RATE#lost-answer", now, 10, 100_000, 1000)
    finally:
        front.close()


@pytest.mark.parametrize("operation", ["settle", "charge"])
def test_a_settlement_or_charge_whose_answer_was_lost_is_applied_once(moto_dynamodb: int, operation: str) -> None:
    key = f"RATE#lost-{operation}"
    now = 1_800_000_000.0
    lose = [False]
    front = LossyFront(moto_dynamodb, lambda target: target.endswith(".UpdateItem") and lose.pop(0) if lose else False)
    try:
        store = _store_behind(front)
        reservation = store.reserve(key, now, 10, 100_000, 1000)
        lose.append(True)  # the next UpdateItem is applied and its answer lost
        if operation == "settle":
            store.settle(reservation, 200)
        else:
            store.charge(key, now, 200)
        assert front.targets.count("DynamoDB_20120810.UpdateItem") == 3  # reserve, then the write sent twice
        item = store.client.call(
            "GetItem", {"TableName": "t", "Key": {"pk": {"S": key}, "sk": {"S": f"DAY#{reservation.day}"}}}
        )["Item"]
        expected = ("200", "0") if operation == "settle" else ("1200", "1000")
        assert (item["tokens"]["N"], item["held"]["N"]) == expected
    finally:
        front.close()
