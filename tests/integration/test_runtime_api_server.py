"""The local Runtime API answers like RAPID: 202, 400, 410, init errors, trailers."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time

import pytest

from local.invocation import Invocation, InvocationFailed, ResponseData, ResponseEnd, ResponseStart
from local.runtime_api import RuntimeApiServer
from sigstream_runtime.api_client import Invocation as ClientInvocation
from sigstream_runtime.api_client import RuntimeApiClient, StreamAbortedError


class FakeEnvironment:
    """Just enough of local.pool.Environment for the server: one queued invocation."""

    function_arn = "arn:aws:lambda:us-east-1:123456789012:function:fake"

    def __init__(self) -> None:
        self.queue: list[Invocation] = []
        self.running: dict[str, Invocation] = {}
        self.expired: set[str] = set()
        self.init_error: tuple[str, bytes] | None = None

    def next_invocation(self) -> Invocation | None:
        inv = self.queue.pop(0)
        inv.begin(self)
        self.running[inv.request_id] = inv
        return inv

    def finished(self, inv: Invocation) -> None:
        self.running.pop(inv.request_id, None)

    def init_failed(self, error_type: str, body: bytes) -> None:
        self.init_error = (error_type, body)


@pytest.fixture()
def api():
    env = FakeEnvironment()
    server = RuntimeApiServer(env)  # type: ignore[arg-type]
    yield env, server
    server.stop()


def _drain(inv: Invocation) -> list[object]:
    out = []
    while True:
        item = inv.events.get(timeout=10)
        out.append(item)
        if isinstance(item, (ResponseEnd, InvocationFailed)):
            return out


def _raw(server: RuntimeApiServer, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    host, port = server.address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, "/2018-06-01" + path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def test_next_hands_out_the_event_with_all_headers(api) -> None:
    env, server = api
    env.queue.append(Invocation(event=b'{"k":1}', timeout=5, trace_id="Root=1-abc", client_context='{"c":1}'))
    inv = RuntimeApiClient(server.address).next_invocation()
    assert inv.body == b'{"k":1}'
    assert inv.trace_id == "Root=1-abc" and inv.client_context == '{"c":1}'
    assert inv.function_arn == FakeEnvironment.function_arn
    assert inv.invocation_id and inv.deadline_ms > time.time() * 1000


def test_buffered_response_is_accepted_with_202(api) -> None:
    env, server = api
    queued = Invocation(event=b"{}", timeout=5)
    env.queue.append(queued)
    client = RuntimeApiClient(server.address)
    inv = client.next_invocation()
    client.post_response(inv, b'{"ok":true}', "application/json")
    events = _drain(queued)
    assert events[0] == ResponseStart("application/json", streaming=False)
    assert events[1] == ResponseData(b'{"ok":true}') and events[2] == ResponseEnd()


def test_unknown_request_id_is_400_and_a_second_answer_is_rejected(api) -> None:
    _env, server = api
    assert _raw(server, "POST", "/runtime/invocation/nope/response", b"{}") == (
        400,
        {"errorType": "InvalidRequestID", "errorMessage": "unknown or already answered request id"},
    )


def test_buffered_mode_header_is_rejected(api) -> None:
    env, server = api
    queued = Invocation(event=b"{}", timeout=5)
    env.queue.append(queued)
    inv = RuntimeApiClient(server.address).next_invocation()
    status, body = _raw(
        server,
        "POST",
        f"/runtime/invocation/{inv.request_id}/response",
        b"{}",
        {"Lambda-Runtime-Function-Response-Mode": "buffered"},
    )
    assert (status, body["errorType"]) == (400, "InvalidFunctionResponseMode")


def test_stale_invocation_id_and_expired_invocations_get_410(api) -> None:
    env, server = api
    queued = Invocation(event=b"{}", timeout=5)
    env.queue.append(queued)
    inv = RuntimeApiClient(server.address).next_invocation()
    path = f"/runtime/invocation/{inv.request_id}/response"
    assert _raw(server, "POST", path, b"{}", {"Lambda-Runtime-Invocation-Id": "old"})[0] == 410
    queued.fail("Sandbox.Timedout", "timed out")
    env.expired.add(inv.request_id)
    assert _raw(server, "POST", path, b"{}", {"Lambda-Runtime-Invocation-Id": inv.invocation_id})[0] == 410


def test_streamed_chunks_are_relayed_as_they_arrive_and_trailers_parsed(api) -> None:
    env, server = api
    queued = Invocation(event=b"{}", timeout=5)
    env.queue.append(queued)
    client = RuntimeApiClient(server.address)
    inv = client.next_invocation()
    release = threading.Event()
    seen: list[bytes] = []

    def chunks():
        yield b"one"
        release.wait(5)
        yield b"two"
        raise StreamAbortedError("Function.Boom", {"errorMessage": "boom", "errorType": "Boom"})

    sender = threading.Thread(target=client.stream_response, args=(inv, "text/plain", chunks()))
    sender.start()
    first = queued.events.get(timeout=5)
    assert first == ResponseStart("text/plain", streaming=True)
    seen.append(queued.events.get(timeout=5).data)  # "one" arrives while the handler still runs
    assert seen == [b"one"]
    release.set()
    rest = _drain(queued)
    sender.join(5)
    assert rest[0] == ResponseData(b"two")
    end = rest[-1]
    assert isinstance(end, ResponseEnd) and end.error_type == "Function.Boom"
    assert json.loads(base64.b64decode(end.error_body or b"")) == {"errorMessage": "boom", "errorType": "Boom"}


def test_error_types_are_normalised_and_init_errors_recorded(api) -> None:
    env, server = api
    queued = Invocation(event=b"{}", timeout=5)
    env.queue.append(queued)
    client = RuntimeApiClient(server.address)
    inv = client.next_invocation()
    client.post_error(inv, "not a valid type", {"errorMessage": "x"})
    failed = _drain(queued)[0]
    assert isinstance(failed, InvocationFailed) and failed.error_type == "Function.Unknown"
    client.post_init_error("Runtime.ImportModuleError", {"errorMessage": "no module"})
    assert env.init_error == ("Runtime.ImportModuleError", b'{"errorMessage": "no module"}')


def test_client_keeps_one_connection_across_invocations(api) -> None:
    env, server = api
    client = RuntimeApiClient(server.address)
    sock = client._conn.sock
    for _ in range(3):
        queued = Invocation(event=b"{}", timeout=5)
        env.queue.append(queued)
        inv: ClientInvocation = client.next_invocation()
        client.stream_response(inv, "text/plain", iter([b"x"]))
        _drain(queued)
    assert client._conn.sock is sock


def test_the_runtime_reconnects_when_the_runtime_api_restarts() -> None:
    env = FakeEnvironment()
    first = RuntimeApiServer(env)  # type: ignore[arg-type]
    port = first.server_address[1]
    client = RuntimeApiClient(first.address)
    env.queue.append(Invocation(event=b'{"n":1}', timeout=5))
    assert client.next_invocation().body == b'{"n":1}'
    first.stop()  # the Runtime API goes away and comes back on the same address
    second = None
    deadline = time.monotonic() + 10
    while second is None:
        try:
            second = RuntimeApiServer(env, port)  # type: ignore[arg-type]
        except OSError:
            second = None
            assert time.monotonic() < deadline
            time.sleep(0.1)
    try:
        env.queue.append(Invocation(event=b'{"n":2}', timeout=5))
        assert client.next_invocation().body == b'{"n":2}'
    finally:
        second.stop()
