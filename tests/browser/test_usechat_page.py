"""web/examples/usechat in Debian's Chromium: useChat (@ai-sdk/react) + our UI message stream encoder, end to end.

The Function URL here is a fake (tests/browser/usechat_gateway.py) that answers with UiStreamEncoder output for
scripted OpenAI chunks, on another origin than the page, so CORS preflights are real. The integration of issue 14
points the same page at the local stack.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.usechat_gateway import SLOW_WORDS, FakeGateway
from tests.conftest import ROOT
from tests.usechat import USECHAT, node

REFERENCE = ROOT / "docs" / "reference" / "ui-message-stream.md"


@pytest.fixture(scope="module")
def gateway() -> Iterator[FakeGateway]:
    """The bundle built by esbuild from the installed npm packages (never a CDN), served by the fake gateway."""
    subprocess.run([node(), "build.mjs"], cwd=USECHAT, check=True, capture_output=True, timeout=300)
    fake = FakeGateway(USECHAT / "dist")
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture()
def chat(browser: Any, gateway: FakeGateway) -> Iterator[Any]:
    """A fresh context on a fresh chat; page errors fail the test."""
    context = browser.new_context(viewport={"width": 900, "height": 700})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.chat_id = f"chat-{uuid.uuid4().hex[:8]}"
    yield page
    context.close()
    assert errors == [], errors


def open_chat(page: Any, gateway: FakeGateway, query: str = "") -> None:
    """Load the page and let its automatic resume (useChat `resume: true`) answer before the test sends anything."""
    with page.expect_response(lambda response: "/stream?" in response.url):
        page.goto(f"{gateway.page_origin}/chat/{page.chat_id}/{query}")
    page.wait_for_selector('[data-testid="status"][data-state="ready"]')


def send(page: Any, text: str) -> None:
    page.fill('[data-testid="input"]', text)
    page.click('[data-testid="send"]')


def assistant_texts(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        '[data-testid="message"][data-role="assistant"]',
        "els => els.map(el => [...el.querySelectorAll('[data-testid=text]')].map(t => t.textContent).join(''))",
    )


def wait_ready(page: Any) -> None:
    page.wait_for_selector('[data-testid="status"][data-state="ready"]', timeout=20_000)


def test_a_streamed_answer_appears_progressively(chat: Any, gateway: FakeGateway) -> None:
    open_chat(chat, gateway)
    send(chat, "slow please")
    seen: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        texts = assistant_texts(chat)
        if texts:
            seen.append(len(texts[-1]))
        if chat.get_attribute('[data-testid="status"]', "data-state") == "ready":
            break
        time.sleep(0.05)
    wait_ready(chat)
    final = assistant_texts(chat)
    assert final == ["".join(f"word{i} " for i in range(SLOW_WORDS))]
    partial = sorted({n for n in seen if 0 < n < len(final[0])})
    assert len(partial) >= 3, seen  # the text grew in steps while the stream was open, not all at the end
    request = gateway.chat_requests[-1]
    assert request["trigger"] == "submit-message" and request["openai"] == [{"role": "user", "content": "slow please"}]
    assert request["tools"][0]["function"]["name"] == "getLocation"  # the transport's body option reached us
    message_id = chat.get_attribute('[data-testid="message"][data-role="assistant"]', "data-id")
    assert message_id == request["response_message_id"]  # the start chunk's messageId is the message's id


def test_stop_aborts_the_fetch_and_calls_the_stop_route(chat: Any, gateway: FakeGateway) -> None:
    open_chat(chat, gateway)
    send(chat, "slow then stop")
    chat.wait_for_function(
        "() => (document.querySelector('[data-role=assistant]')?.textContent ?? '').includes('word3')"
    )
    chat.click('[data-testid="stop"]')
    wait_ready(chat)
    deadline = time.monotonic() + 10
    while chat.chat_id not in gateway.stop_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert chat.chat_id in gateway.stop_requests  # POST /v1/conversations/{id}/stop with a fresh signed URL
    live = gateway.chat(chat.chat_id).live
    assert live is not None
    with live.changed:
        live.changed.wait_for(lambda: live.done, timeout=10)
    assert live.stopped  # the producer ended on the stop request, not at the end of the answer
    shown = assistant_texts(chat)[-1]
    time.sleep(0.5)
    assert assistant_texts(chat)[-1] == shown and len(shown) < len("".join(f"word{i} " for i in range(SLOW_WORDS)))
    assert live.text.startswith(shown)
    assert chat.query_selector('[data-testid="error"]') is None  # a stop is not an error


def test_an_error_chunk_after_the_first_byte_surfaces_in_use_chat_error(chat: Any, gateway: FakeGateway) -> None:
    open_chat(chat, gateway)
    send(chat, "fail midway")
    chat.wait_for_selector('[data-testid="error"]', timeout=20_000)
    assert "upstream_error: The provider failed mid-answer." in chat.inner_text('[data-testid="error"]')
    assert chat.get_attribute('[data-testid="status"]', "data-state") == "error"
    assert assistant_texts(chat) == ["Partial answer "]


def test_an_expired_url_surfaces_in_use_chat_error(chat: Any, gateway: FakeGateway) -> None:
    open_chat(chat, gateway)
    gateway.expire_next_url = True
    send(chat, "hello")
    chat.wait_for_selector('[data-testid="error"]', timeout=20_000)
    assert "The signed URL has expired." in chat.inner_text('[data-testid="error"]')


def test_a_client_side_tool_call_round_trip(chat: Any, gateway: FakeGateway) -> None:
    open_chat(chat, gateway)
    before = len(gateway.chat_requests)
    send(chat, "weather where I am?")
    chat.wait_for_function(
        "() => (document.querySelector('[data-role=assistant]')?.textContent ?? '').includes('You are in Paris.')",
        timeout=20_000,
    )
    wait_ready(chat)
    first, second = gateway.chat_requests[before:]
    assert second["trigger"] == "submit-message" and second["messageId"] == first["response_message_id"]
    call_id = second["openai"][1]["tool_calls"][0]["id"]
    assert second["openai"] == [
        {"role": "user", "content": "weather where I am?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "getLocation", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"city":"Paris"}'},
    ]
    assert second["response_message_id"] == first["response_message_id"]  # the answer continues the same message
    messages = chat.query_selector_all('[data-testid="message"][data-role="assistant"]')
    assert len(messages) == 1
    tool = chat.query_selector('[data-testid="tool"][data-tool="getLocation"]')
    assert tool is not None and tool.get_attribute("data-state") == "output-available"


def test_regenerate_replaces_the_last_answer(chat: Any, gateway: FakeGateway) -> None:
    open_chat(chat, gateway)
    send(chat, "hello")
    wait_ready(chat)
    [first] = assistant_texts(chat)
    chat.click('[data-testid="regenerate"]')
    chat.wait_for_function(f"() => !document.body.textContent.includes({first!r})", timeout=20_000)
    wait_ready(chat)
    [second] = assistant_texts(chat)
    assert re.fullmatch(r"Echo #\d+: hello", second) and second != first
    request = gateway.chat_requests[-1]
    assert request["trigger"] == "regenerate-message"
    assert request["openai"] == [{"role": "user", "content": "hello"}]  # the old answer is not resent
    assert len(chat.query_selector_all('[data-testid="message"][data-role="user"]')) == 1


def test_reload_mid_answer_resumes_the_stream(chat: Any, gateway: FakeGateway) -> None:
    open_chat(chat, gateway)
    send(chat, "slow and reload")
    chat.wait_for_function(
        "() => (document.querySelector('[data-role=assistant]')?.textContent ?? '').includes('word2')"
    )
    chat.reload()  # useChat({resume: true}) reconnects: GET {api}/{id}/stream with a fresh signed URL
    chat.wait_for_function(
        f"() => (document.querySelector('[data-role=assistant]')?.textContent ?? '').includes('word{SLOW_WORDS - 1}')",
        timeout=20_000,
    )
    wait_ready(chat)
    assert assistant_texts(chat) == ["".join(f"word{i} " for i in range(SLOW_WORDS))]  # replayed once, no duplicates
    resumed = [r for r in gateway.resume_requests if r[0] == chat.chat_id]
    assert resumed and resumed[-1][1] > 0  # it resumed a reply that already had checkpointed text
    assert len(chat.query_selector_all('[data-testid="message"][data-role="user"]')) == 1


def test_nothing_in_progress_reconnects_to_204_and_stays_ready(chat: Any, gateway: FakeGateway) -> None:
    open_chat(chat, gateway)
    assert (chat.chat_id, -1) in gateway.resume_requests
    assert chat.query_selector('[data-testid="error"]') is None


def test_text_stream_transport(chat: Any, gateway: FakeGateway) -> None:
    open_chat(chat, gateway, "?transport=text")
    send(chat, "hello text")
    chat.wait_for_function("() => document.body.textContent.includes(': hello text')", timeout=20_000)
    wait_ready(chat)
    [text] = assistant_texts(chat)
    assert re.fullmatch(r"Echo #\d+: hello text", text)
    assert gateway.chat_requests[-1]["accept"] == "text/plain"


def documented_allow_headers() -> set[str]:
    """The header list in docs/reference/ui-message-stream.md (between the cors-allow-headers markers)."""
    text = REFERENCE.read_text()
    block = text.split("<!-- cors-allow-headers:start -->")[1].split("<!-- cors-allow-headers:end -->")[0]
    return {line.strip().strip("`").lower() for line in block.splitlines() if line.strip().startswith("`")}


def test_every_header_the_transports_and_openai_node_send_from_chromium_is_documented(
    browser: Any, gateway: FakeGateway
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{gateway.page_origin}/probe.html")
    page.wait_for_function("() => typeof window.runProbes === 'function'")
    results = page.evaluate("api => window.runProbes(api)", f"{gateway.api_origin}/probe")
    context.close()
    assert set(results.values()) == {"ok"}, results
    documented = documented_allow_headers()
    for name in results:
        requested = gateway.preflights.get(name, set())
        assert requested <= documented, (name, requested - documented)
    assert gateway.preflights["ai-default-send"] == {"content-type"}
    assert "x-stainless-helper-method" in gateway.preflights["openai-stream-helper"]
    assert "x-stainless-helper-method" in gateway.preflights["openai-parse"]
    assert "x-stainless-helper-method" in gateway.preflights["openai-run-tools"]
    assert {"authorization", "x-stainless-retry-count", "x-stainless-os"} <= gateway.preflights["openai-create-stream"]
    configured = gateway.preflights["openai-configured-client"]
    assert {"openai-organization", "openai-project", "x-stainless-timeout"} <= configured
