"""What importing the Stream function's handler costs: no SDK, no threads, nothing a forked worker would share."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

ENV = {
    "PATH": "/usr/bin:/bin",
    "PYTHONPATH": ":".join(
        str(ROOT / p) for p in ("functions/stream", "layers/core/python", "layers/streaming-runtime/python")
    ),
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "secret",  # pragma: allowlist secret
    "SIGSTREAM_TABLE": "t",
    "SIGSTREAM_SIGNING_KEYS_SECRET": "s",
    "SIGSTREAM_PROVIDER_KEY_SECRET": "p",
    "SIGSTREAM_UPSTREAM_BASE_URL": "https://api.openai.com/v1",
}
PROBE = """
import json, sys, threading
import stream_handler
print(json.dumps({
    "modules": sorted(sys.modules),
    "threads": [t.name for t in threading.enumerate()],
}))
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=ENV, cwd=ROOT / "functions" / "stream", capture_output=True, text=True, check=True
    )


def test_the_handler_imports_without_the_openai_sdk_or_its_http_stack() -> None:
    loaded = json.loads(_run("-c", PROBE).stdout)
    modules = set(loaded["modules"])
    assert not {"openai", "httpx", "httpx2", "httpcore", "urllib3", "pydantic", "boto3", "botocore.session"} & modules
    # Powertools (~20 ms) loads with the first log line or metrics flush, after a first byte that logs nothing.
    assert not any(m.split(".")[0] in {"aws_lambda_powertools", "botocore"} for m in modules)
    assert loaded["threads"] == ["MainThread"]  # nothing running when the runtime forks its workers
    assert "stream_app.ui_chat" not in modules  # the AI SDK's routes load on their first request (~5 ms)
    assert "stream_app.conversations" not in modules  # so do the history, stop and resume routes (~3 ms)


def test_importtime_shows_no_sdk_on_the_cold_path() -> None:
    report = _run("-X", "importtime", "-c", "import stream_handler").stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in report.splitlines() if line.startswith("import time:")}
    assert "stream_handler" in imported and "stream_app.app" in imported
    assert not any(name.split(".")[0] in {"openai", "httpx2", "pydantic"} for name in imported)
