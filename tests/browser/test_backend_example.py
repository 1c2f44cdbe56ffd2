"""The example signing backend (examples/flask_backend) as its users meet it: log in, chat, only your own history.

It runs as documented (`python -m examples.flask_backend`, a real subprocess) against `make dev`, and calls the
Sign URL with SigV4 from its own credentials; Chromium drives the page it serves.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.browser.conftest import DevStack
from tests.conftest import ROOT

ASSISTANT = '[data-testid="message"][data-role="assistant"]'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def backend(dev_stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m examples.flask_backend --endpoints …` next to `make dev`, with two users."""
    endpoints = tmp_path_factory.mktemp("backend") / "endpoints.json"
    endpoints.write_text(json.dumps(dev_stack.endpoints))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SIGSTREAM_"))}
    env["BACKEND_USERS"] = "alice:wonderland,bob:builder"
    command = [sys.executable, "-m", "examples.flask_backend", "--endpoints", str(endpoints), "--port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "backend exited"
            assert time.monotonic() < deadline, "the backend did not come up"
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def _login(browser: Any, base: str, user: str, password: str) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base)
    page.wait_for_selector('[data-testid="login"]')  # not logged in: the backend sends the login page
    page.fill('[data-testid="username"]', user)
    page.fill('[data-testid="password"]', password)
    page.click('[data-testid="login-submit"]')
    return context, page, errors


def _items(dev_stack: DevStack, conversation_id: str) -> list[dict[str, Any]]:
    endpoints = dev_stack.endpoints
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=endpoints["aws_endpoint_url"],
        region_name=endpoints["region"],
        aws_access_key_id=endpoints["aws_access_key_id"],
        aws_secret_access_key=endpoints["aws_secret_access_key"],
    )
    table = dynamodb.list_tables()["TableNames"][0]
    return dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"CONV#{conversation_id}"}},
    )["Items"]


def test_a_logged_in_user_chats_through_the_backend_and_sees_only_their_history(
    browser: Any, backend: str, dev_stack: DevStack
) -> None:
    dev_stack.upstream(delay_ms=20)
    context, page, errors = _login(browser, backend, "alice", "not her password")
    page.wait_for_selector('[data-testid="login-error"]')
    page.fill('[data-testid="username"]', "alice")
    page.fill('[data-testid="password"]', "wonderland")
    page.click('[data-testid="login-submit"]')
    page.wait_for_selector('[data-testid="status"][data-state="idle"]')
    page.fill('[data-testid="input"]', "hello from alice")
    page.click('[data-testid="send"]')
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]', timeout=30_000)
    assert page.locator(ASSISTANT).last.locator(".text").text_content() == "Echo (1 messages): hello from alice"
    assert page.locator('[data-testid="upstream-note"]').is_hidden()  # only make dev's own page claims an echo
    conversation = page.evaluate("location.hash.slice(1)")
    page.reload()
    page.wait_for_selector('[data-testid="status"][data-state="idle"]')
    assert page.locator('[data-testid="conversation"]').first.get_attribute("data-id") == conversation
    context.close()
    assert errors == []
    # The backend's user became the URL's subject: the stored conversation belongs to acct:alice.
    subjects = {item["subject"]["S"] for item in _items(dev_stack, conversation) if "subject" in item}
    assert subjects == {"acct:alice"}

    context, page, errors = _login(browser, backend, "bob", "builder")
    page.wait_for_selector('[data-testid="status"][data-state="idle"]')
    assert page.locator('[data-testid="conversation"]').count() == 0  # bob does not see alice's conversation
    context.close()
    assert errors == []


def test_the_backend_signs_only_for_a_session_and_pins_the_page_to_the_stream_url(
    backend: str, dev_stack: DevStack
) -> None:
    body = json.dumps({"action": "chat"}).encode()
    request = urllib.request.Request(backend + "api/sign", body, {"content-type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    with urllib.request.urlopen(backend + "login", timeout=10) as response:
        csp = response.headers["Content-Security-Policy"]
    stream_origin = dev_stack.endpoints["stream_url"].rstrip("/")
    assert f"connect-src 'self' {stream_origin}" in csp and "frame-ancestors 'none'" in csp


def test_the_example_documents_how_to_run_it() -> None:
    readme = (ROOT / "examples" / "flask_backend" / "README.md").read_text()
    assert "make backend" in readme and "BackendSignPolicyArn" in readme
    assert "make backend" in (ROOT / "README.md").read_text()
    assert Path(ROOT / "Makefile").read_text().count("-m examples.flask_backend") == 1
