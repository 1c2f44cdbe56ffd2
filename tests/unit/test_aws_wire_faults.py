"""The AWS client against a hostile or odd endpoint: scripted answers over real sockets, and lost answers from moto."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from sigstream.adapters.aws_client import DYNAMODB, AwsJsonClient, AwsServiceError, Credentials
from sigstream.adapters.http_exchange import ResponseFormatError, content_length

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
