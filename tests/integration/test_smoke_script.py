"""The deploy smoke test (.github/scripts/smoke.py), run as CI runs it, against the local stack."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from types import ModuleType

import pytest

from local.stack import LocalStack
from tests.conftest import RECORDED, ROOT
from tests.helpers import upstream_control
from tests.integration.test_template import TOOLS

SCRIPT = ROOT / ".github" / "scripts" / "smoke.py"
FIXTURES = RECORDED / "openai-sse"


def _smoke(stack: LocalStack) -> subprocess.CompletedProcess[str]:
    endpoints = stack.endpoints()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": endpoints["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": endpoints["aws_secret_access_key"],
    }
    env.pop("AWS_SESSION_TOKEN", None)
    command = [str(TOOLS / "python"), str(SCRIPT), "--sign-url", endpoints["sign_url"], "--region", endpoints["region"]]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_passes_against_a_healthy_stack(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    result = _smoke(app_stack)
    assert result.returncode == 0, result.stderr
    assert "smoke test passed" in result.stdout


def test_smoke_fails_when_the_stream_carries_an_error_event(app_stack: LocalStack) -> None:
    upstream_control(app_stack, cut_after=1)  # the gateway answers 200, then an SSE error event
    result = _smoke(app_stack)
    assert result.returncode == 1
    assert "error event" in result.stderr and "upstream_error" in result.stderr


def test_smoke_fails_when_the_provider_is_down(app_stack: LocalStack) -> None:
    upstream_control(app_stack, faults=[{"status": 503}] * 3)
    result = _smoke(app_stack)
    assert result.returncode == 1 and "the stream answered 502" in result.stderr


def test_check_stream_reads_recorded_openai_streams_and_refuses_error_events() -> None:
    smoke = _module()
    index = json.loads((FIXTURES / "index.json").read_text())
    texts = [e for e in index if e.get("choice0_text")]
    assert texts
    for entry in texts:
        text = (FIXTURES / entry["file"]).read_text()
        assert smoke.check_stream(text) == entry["choice0_text"], entry["file"]
        error = 'data: {"error":{"message":"x","type":"server_error","param":null,"code":"upstream_error"}}\n\n'
        with pytest.raises(smoke.SmokeError, match="error event"):
            smoke.check_stream(text.replace("data: [DONE]", error + "data: [DONE]"))
    with pytest.raises(smoke.SmokeError, match="error event"):
        smoke.check_stream('event: error\ndata: {"message": "overloaded"}\n\ndata: [DONE]\n\n')
    with pytest.raises(smoke.SmokeError, match="did not end"):
        smoke.check_stream('data: {"choices":[{"index":0,"delta":{"content":"cut"}}]}\n\n')
