"""`make dev` and `make invoke` as a developer runs them: real subprocesses, signals, event files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from local.event_prep import prepare_event
from local.fake_provider import FakeProvider
from local.invoke_cli import pool_caller, run_invocation
from local.stack import LocalStack
from tests.conftest import ROOT
from tests.helpers import event_table, http, sse_text

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "core" / "python")}


def test_every_event_file_is_documented_and_gives_its_scenario(app_stack: LocalStack) -> None:
    """Each events/ file, prepared as `make event` prepares it, gives the status events/README.md says."""
    table = event_table()
    assert sorted(p.name for p in (ROOT / "events").glob("*.json")) == sorted(table)
    secrets = app_stack.secret_values()
    call = pool_caller(app_stack.pools["StreamFunction"], "us-east-1")
    # Delete first: the messages event after it must still work (its conversation is re-created).
    for name in sorted(table, key=lambda n: "delete" not in n):
        function, status = table[name]
        event = prepare_event((ROOT / "events" / name).read_bytes(), secrets, app_stack.sw1_app["proxy"], call)
        outcome = run_invocation(app_stack.pools[function], event, timeout=60)
        assert outcome.status == status, (name, outcome.body[:300])
        assert outcome.error_type is None, name


def test_make_invoke_streams_the_body_to_stdout() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local", "invoke", "StreamFunction", "events/stream-chat-valid.json"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.rstrip().endswith(b"data: [DONE]")
    assert sse_text(result.stdout).startswith("Echo (1 messages): Write a haiku")
    # The status line goes to stderr (like sam local invoke's logs), so stdout is exactly the body.
    assert result.stderr.startswith(b"HTTP 200  content-type: text/event-stream")


def test_make_invoke_reports_errors_with_exit_code() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local", "invoke", "NoSuchFunction", "events/stream-chat-valid.json"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and b"StreamFunction" in result.stderr


def test_make_invoke_prints_the_status_and_a_mid_stream_failure_clearly(demo_stack: LocalStack) -> None:
    """A stream that fails after its first byte: body (with its in-band error event), then one error line."""
    import io

    from local.invoke_cli import print_invocation

    event = {"version": "2.0", "rawPath": "/boom-mid-sse", "requestContext": {"requestId": "r1"}, "headers": {}}
    out, err = io.BytesIO(), io.StringIO()
    code = print_invocation(demo_stack.pools["StreamerFunction"], json.dumps(event).encode(), out, err)
    assert code == 1
    assert out.getvalue().startswith(b"data: one\n\ndata: half-writ\n\nevent: error\ndata: ")
    lines = err.getvalue().splitlines()
    assert lines[0] == "HTTP 200  content-type: text/event-stream"
    assert lines[-1] == (
        "error: the function failed after the response started (Function.RuntimeError: exploded mid-stream); "
        "the client saw a cut-off stream"
    )


def test_make_invoke_prints_an_invocation_error_as_the_502_a_client_gets(demo_stack: LocalStack) -> None:
    import io

    from local.invoke_cli import print_invocation

    event = {"version": "2.0", "rawPath": "/boom-before", "requestContext": {"requestId": "r2"}, "headers": {}}
    out, err = io.BytesIO(), io.StringIO()
    assert print_invocation(demo_stack.pools["StreamerFunction"], json.dumps(event).encode(), out, err) == 1
    assert err.getvalue().splitlines() == [
        "HTTP 502",
        "error: the invocation failed (Function.ValueError: exploded before the first byte); a Function URL answers 502",
    ]


def _port_open(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def _start_dev(tmp_path: Path, extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict]:
    env = {**ENV, "SIGSTREAM_LOCAL_STATE_DIR": str(tmp_path), **extra_env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "local", "dev"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoints_file = tmp_path / "endpoints.json"
    deadline = time.monotonic() + 60
    while not endpoints_file.exists():
        assert proc.poll() is None, "make dev exited early"
        assert time.monotonic() < deadline, "endpoints.json never appeared"
        time.sleep(0.1)
    return proc, json.loads(endpoints_file.read_text())


def test_make_dev_writes_endpoints_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    from tests.helpers import sign as sign_request

    proc, endpoints = _start_dev(tmp_path, {})
    try:
        for key in (
            "sign_url",
            "stream_url",
            "web_url",
            "aws_endpoint_url",
            "region",
            "aws_access_key_id",
            "aws_secret_access_key",
            "upstream_base_url",
            "sw1_app",
        ):
            assert endpoints[key], key
        assert set(endpoints["sw1_app"]) == {"id", "secret"}
        status, _, body = http("GET", endpoints["web_url"])
        assert status == 200 and b"<html" in body.lower()
        fake = type("S", (), {"endpoints": lambda self: endpoints})()
        status, answer = sign_request(fake, {"subject": "dev-user", "stateless": True})  # type: ignore[arg-type]
        assert status == 200
        status, _, body = http(
            "POST",
            answer["url"],
            json.dumps({"messages": [{"role": "user", "content": "up?"}]}).encode(),
            {"content-type": "application/json"},
        )
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "Echo (1 messages): up?"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    urls = [endpoints[k] for k in ("sign_url", "stream_url", "web_url", "aws_endpoint_url")]
    assert not any(_port_open(u) for u in urls)
    assert not (tmp_path / "endpoints.json").exists()


def test_make_dev_uses_a_real_provider_when_given(tmp_path: Path) -> None:
    provider = FakeProvider(api_key="sk-provider-test-key")
    try:
        proc, endpoints = _start_dev(
            tmp_path, {"UPSTREAM_BASE_URL": provider.base_url, "UPSTREAM_API_KEY": "sk-provider-test-key"}
        )
        try:
            assert endpoints["upstream_base_url"] == provider.base_url
            import boto3

            sm = boto3.client(
                "secretsmanager",
                endpoint_url=endpoints["aws_endpoint_url"],
                region_name=endpoints["region"],
                aws_access_key_id=endpoints["aws_access_key_id"],
                aws_secret_access_key=endpoints["aws_secret_access_key"],
            )
            arn = next(s["ARN"] for s in sm.list_secrets()["SecretList"] if "ProviderKey" in s["Name"])
            assert sm.get_secret_value(SecretId=arn)["SecretString"] == "sk-provider-test-key"
            from tests.helpers import sign as sign_request

            fake = type("S", (), {"endpoints": lambda self: endpoints})()
            _, answer = sign_request(fake, {"subject": "dev-user", "stateless": True})  # type: ignore[arg-type]
            status, _, _ = http(
                "POST",
                answer["url"],
                json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
                {"content-type": "application/json"},
            )
            assert status == 200
            sent = {k.lower(): v for k, v in provider.control.requests[-1]["headers"].items()}
            assert sent["authorization"] == "Bearer sk-provider-test-key"
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
    finally:
        provider.stop()
