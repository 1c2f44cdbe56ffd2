"""The streaming runtime under the local Runtime API and Function URLs, over real sockets."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, urlsplit

import pytest

from local.invocation import InvocationFailed, ResponseData, ResponseEnd, ResponseStart
from local.stack import LocalStack


def _conn(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def _get(url: str, path: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None):
    conn = _conn(url)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def _events(stack: LocalStack, function: str, path: str) -> list[object]:
    """Invoke the pool directly and collect every response event."""
    raw_path, _, query = path.partition("?")
    event = {
        "rawPath": raw_path,
        "queryStringParameters": dict(parse_qsl(query)),
        "requestContext": {"requestId": "direct"},
        "headers": {},
    }
    inv = stack.pools[function].invoke(json.dumps(event).encode())
    out: list[object] = []
    while True:
        item = inv.events.get(timeout=30)
        out.append(item)
        if isinstance(item, (ResponseEnd, InvocationFailed)):
            return out


def test_chunks_reach_the_client_one_by_one_as_they_are_yielded(demo_stack: LocalStack) -> None:
    url = demo_stack.urls["StreamerFunction"].url
    conn = _conn(url)
    conn.request("GET", "/ticks?n=6&interval=0.1")
    response = conn.getresponse()
    arrivals = []
    for line in response:
        arrivals.append((time.monotonic(), line))
    assert [line.split()[1] for _, line in arrivals] == [b"0", b"1", b"2", b"3", b"4", b"5"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    # Each tick is seen about 100 ms after the previous one, not all at the end.
    assert all(0.04 < gap < 0.5 for gap in gaps), gaps
    assert arrivals[-1][0] - arrivals[0][0] > 0.35


def test_prelude_sets_status_headers_and_cookies(demo_stack: LocalStack) -> None:
    response, body = _get(demo_stack.urls["StreamerFunction"].url, "/ticks?n=2&interval=0")
    assert response.status == 201
    assert response.getheader("content-type") == "text/plain"
    assert response.getheader("x-demo") == "1"
    assert response.getheader("set-cookie") == "sid=abc; Path=/"
    assert response.getheader("transfer-encoding") == "chunked"
    assert body.count(b"tick") == 2


def test_mid_stream_exception_cuts_the_stream_and_sends_error_trailers(demo_stack: LocalStack) -> None:
    conn = _conn(demo_stack.urls["StreamerFunction"].url)
    conn.request("GET", "/boom-mid")
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert cut.value.partial == b"first part\nsecond part\n"

    events = _events(demo_stack, "StreamerFunction", "/boom-mid")
    end = events[-1]
    assert isinstance(end, ResponseEnd)
    assert end.error_type == "Function.RuntimeError"
    trailer = json.loads(base64.b64decode(end.error_body or b""))
    assert trailer["errorType"] == "RuntimeError"
    assert trailer["errorMessage"] == "exploded mid-stream"


def test_mid_stream_exception_in_an_event_stream_is_also_reported_in_the_body(demo_stack: LocalStack) -> None:
    """Trailers never reach a browser or an emulator's output: an SSE body gets an `error` event as well."""
    conn = _conn(demo_stack.urls["StreamerFunction"].url)
    conn.request("GET", "/boom-mid-sse")
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    body = cut.value.partial
    assert body.startswith(b"data: one\n\ndata: half-writ\n\nevent: error\ndata: ")
    notice = json.loads(body.split(b"event: error\ndata: ", 1)[1])
    assert notice["error"]["type"] == "Function.RuntimeError" and notice["error"]["request_id"]
    assert "exploded" not in body.decode()  # the message and stack trace stay in the log
    end = _events(demo_stack, "StreamerFunction", "/boom-mid-sse")[-1]
    assert isinstance(end, ResponseEnd) and end.error_type == "Function.RuntimeError"  # trailers still sent


@pytest.mark.parametrize("path,error_type", [("/boom-before", "Function.ValueError"), ("/raise", "Function.KeyError")])
def test_exception_before_the_first_byte_posts_invocation_error(
    demo_stack: LocalStack, path: str, error_type: str
) -> None:
    response, body = _get(demo_stack.urls["StreamerFunction"].url, path)
    assert response.status == 502
    assert response.getheader("x-amzn-errortype") == error_type
    assert json.loads(body) == {"Message": "Internal Server Error"}
    events = _events(demo_stack, "StreamerFunction", path)
    assert len(events) == 1 and isinstance(events[0], InvocationFailed)
    payload = json.loads(events[0].body)
    assert payload["errorType"] == error_type.split(".")[1]
    assert payload["stackTrace"], "the stack trace goes to the Runtime API (logs), not to the client"


def test_empty_stream_still_sends_the_prelude(demo_stack: LocalStack) -> None:
    response, body = _get(demo_stack.urls["StreamerFunction"].url, "/empty")
    assert (response.status, body) == (204, b"")


def test_async_generator_bodies_stream(demo_stack: LocalStack) -> None:
    response, body = _get(demo_stack.urls["StreamerFunction"].url, "/async")
    assert (response.status, body) == (200, b"async works")


def test_binary_chunks_with_nul_bytes_pass_unchanged(demo_stack: LocalStack) -> None:
    _response, body = _get(demo_stack.urls["StreamerFunction"].url, "/binary")
    assert body == bytes(range(256)) + b"\x00" * 16


def test_no_empty_chunk_is_sent_mid_stream(demo_stack: LocalStack) -> None:
    events = _events(demo_stack, "StreamerFunction", "/ticks?n=3&interval=0")
    start = events[0]
    assert isinstance(start, ResponseStart) and start.streaming
    assert start.content_type == "application/vnd.awslambda.http-integration-response"
    data = [e for e in events if isinstance(e, ResponseData)]
    assert data and all(e.data for e in data)
    assert data[0].data.startswith(b'{"statusCode":201') and b"\x00" * 8 in data[0].data


def test_buffered_dict_round_trips_through_the_function_url(demo_stack: LocalStack) -> None:
    response, body = _get(
        demo_stack.urls["BufferedFunction"].url, "/echo", "POST", b'{"a":1}', {"content-type": "application/json"}
    )
    assert response.status == 200
    assert response.getheader("x-route") == "echo"
    assert response.msg.get_all("set-cookie") == ["a=1", "b=2"]
    assert json.loads(body) == {"path": "/echo", "body": '{"a":1}', "b64": False}


def test_context_and_environment_match_lambda(demo_stack: LocalStack) -> None:
    _response, body = _get(demo_stack.urls["BufferedFunction"].url, "/context")
    ctx = json.loads(body)
    assert ctx["request_id"] == ctx["event_request_id"]
    assert ctx["function_name"] == "sigstream-local-BufferedFunction"
    assert ctx["arn"].endswith(":function:sigstream-local-BufferedFunction")
    assert (ctx["memory"], ctx["version"]) == ("256", "$LATEST")
    assert ctx["log_group"] == "/aws/lambda/sigstream-local-BufferedFunction"
    assert "[$LATEST]" in ctx["log_stream"]
    assert 0 < ctx["remaining_ms"] <= 3000
    assert ctx["trace_env"].startswith("Root=1-")
    assert ctx["greeting"] == "hello"  # Globals + parameter default
    assert ctx["table"] == "sigstream-local-DemoTable"
    assert ctx["secret"].startswith("arn:aws:secretsmanager:us-east-1:")


def test_template_resources_exist_in_moto_server(demo_stack: LocalStack) -> None:
    assert demo_stack.moto is not None
    ddb = demo_stack.moto.client("dynamodb")
    ttl = ddb.describe_time_to_live(TableName="sigstream-local-DemoTable")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    secret = demo_stack.moto.client("secretsmanager").get_secret_value(SecretId="sigstream-local/DemoSecret")
    doc = json.loads(secret["SecretString"])
    assert doc["active"] == "k1" and len(doc["k1"]) == 40


def test_init_error_fails_the_invocation(demo_stack: LocalStack) -> None:
    response, _ = _get(demo_stack.urls["BrokenFunction"].url, "/")
    assert response.status == 502
    assert response.getheader("x-amzn-errortype") == "Runtime.ImportModuleError"


def test_function_timeout_is_enforced_and_the_next_call_gets_a_fresh_environment(demo_stack: LocalStack) -> None:
    url = demo_stack.urls["BufferedFunction"].url
    response, _ = _get(url, "/sleep?seconds=30")
    assert response.status == 502
    assert response.getheader("x-amzn-errortype") == "Sandbox.Timedout"
    assert any("Task timed out after 3" in line for _, line in demo_stack.logs.lines)
    response, _body = _get(url, "/echo")
    assert response.status == 200


def test_max_concurrency_serves_invocations_in_parallel_in_one_environment(demo_stack: LocalStack) -> None:
    pool = demo_stack.pools["ConcurrentFunction"]
    url = demo_stack.urls["ConcurrentFunction"].url
    _get(url, "/pid")  # warm: one environment, four workers
    deadline = time.monotonic() + 10
    while pool.idle_slots < 4 and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker that answered is back in /next
    with ThreadPoolExecutor(4) as ex:
        pids = list(ex.map(lambda _: _get(url, "/pid?hold=0.6")[1], range(4)))
    assert len(pool.environments) == 1
    assert len(set(pids)) == 4


def test_under_max_concurrency_a_timeout_fails_that_invocation_only(demo_stack: LocalStack) -> None:
    """Lambda Managed Instances: a timed-out invocation fails; the environment and its other invocations go on."""
    pool = demo_stack.pools["ConcurrentFunction"]
    url = demo_stack.urls["ConcurrentFunction"].url
    _get(url, "/pid")
    deadline = time.monotonic() + 10
    while pool.idle_slots < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    environment = pool.environments[0]
    with ThreadPoolExecutor(4) as ex:
        stuck = ex.submit(_get, url, "/pid?hold=5")  # past the 3 s timeout
        time.sleep(2.5)
        others = [ex.submit(_get, url, "/pid?hold=1") for _ in range(3)]  # running when the timeout hits
        answers = [f.result() for f in others]
        timed_out, _ = stuck.result()
    assert timed_out.status == 502 and timed_out.getheader("x-amzn-errortype") == "Sandbox.Timedout"
    assert [response.status for response, _ in answers] == [200, 200, 200]
    assert pool.environments == [environment] and environment.process.poll() is None
    time.sleep(2.0)  # the stuck worker finishes (Lambda does not stop it) and serves again
    with ThreadPoolExecutor(4) as ex:
        pids = list(ex.map(lambda _: _get(url, "/pid?hold=0.6")[1], range(4)))
    assert len(set(pids)) == 4 and pool.environments == [environment]


def test_cors_preflight_is_answered_without_invoking(demo_stack: LocalStack) -> None:
    pool = demo_stack.pools["StreamerFunction"]
    before = pool.invocations
    headers = {"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST"}
    response, body = _get(pool_url := demo_stack.urls["StreamerFunction"].url, "/ticks", "OPTIONS", None, headers)
    assert response.status == 200 and body == b""
    assert response.getheader("access-control-allow-origin") == "http://allowed.example"
    assert response.getheader("access-control-allow-methods") == "POST,GET"
    assert response.getheader("access-control-max-age") == "300"
    assert pool.invocations == before
    response, _ = _get(pool_url, "/ticks?n=1", headers={"Origin": "http://allowed.example"})
    assert response.getheader("access-control-expose-headers") == "x-demo"
    response, _ = _get(pool_url, "/ticks?n=1", headers={"Origin": "http://evil.example"})
    assert response.getheader("access-control-allow-origin") is None
