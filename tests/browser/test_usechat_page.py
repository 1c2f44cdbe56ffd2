"""web/examples/usechat in Debian's Chromium against the real local stack (`make dev`): useChat (@ai-sdk/react) over
POST /v1/chat and GET /v1/chat/{id}/stream, signed URLs per request from the app's backend, on another origin than
the Function URL (so every CORS preflight is the local front's). After each scenario the stored history
(GET /v1/conversations/{id}/messages) is compared with what the page shows.

Only the CORS header measurement keeps a fake Function URL (tests/browser/usechat_gateway.py): it records the
Access-Control-Request-Headers each transport and helper sends, which the real stack cannot report.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import DevStack
from tests.browser.usechat_gateway import FakeGateway
from tests.browser.usechat_site import UseChatSite
from tests.conftest import ROOT
from tests.usechat import USECHAT, node

REFERENCE = ROOT / "docs" / "reference" / "ui-message-stream.md"
WORDS = 40


def words(n: int = WORDS) -> str:
    return " ".join(f"w{i}" for i in range(n))


@pytest.fixture(scope="module")
def dist() -> Any:
    """The bundle built by esbuild from the installed npm packages (never a CDN)."""
    subprocess.run([node(), "build.mjs"], cwd=USECHAT, check=True, capture_output=True, timeout=300)
    return USECHAT / "dist"


@pytest.fixture(scope="module")
def site(dist: Any, dev_stack: DevStack) -> Iterator[UseChatSite]:
    server = UseChatSite(dist, dev_stack.endpoints)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def chat(browser: Any, site: UseChatSite, dev_stack: DevStack) -> Iterator[Any]:
    """A fresh context on a fresh conversation (issued by the Sign function); page errors fail the test."""
    dev_stack.upstream()
    context = browser.new_context(viewport={"width": 900, "height": 700})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda message: print("console:", message.type, message.text))  # shown when a test fails
    page.on("requestfailed", lambda request: print("request failed:", request.url[:120], request.failure))
    page.chat_id = site.new_chat()
    yield page
    context.close()
    dev_stack.upstream()  # pacing, faults and tool calls must not reach the next test on this stack
    assert errors == [], errors


def open_chat(page: Any, site: UseChatSite, query: str = "") -> None:
    """Load the page and let its automatic resume (useChat `resume: true`) answer before the test sends anything."""
    with page.expect_response(lambda response: "/stream?" in response.url):
        page.goto(f"{site.origin}/chat/{page.chat_id}/{query}")
    page.wait_for_selector('[data-testid="status"][data-state="ready"]')


def send(page: Any, text: str) -> None:
    page.fill('[data-testid="input"]', text)
    page.click('[data-testid="send"]')


def assistant_texts(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        '[data-testid="message"][data-role="assistant"]',
        "els => els.map(el => [...el.querySelectorAll('[data-testid=text]')].map(t => t.textContent).join(''))",
    )


def shown(page: Any) -> list[tuple[str, str]]:
    """(role, text) of every message the page shows."""
    return [
        (role, text)
        for role, text in page.eval_on_selector_all(
            '[data-testid="message"]',
            "els => els.map(el => [el.dataset.role, [...el.querySelectorAll('[data-testid=text]')].map(t => t.textContent).join('')])",
        )
    ]


def wait_ready(page: Any) -> None:
    page.wait_for_selector('[data-testid="status"][data-state="ready"]', timeout=30_000)


def wait_text(page: Any, needle: str) -> None:
    page.wait_for_function(
        "needle => [...document.querySelectorAll('[data-role=assistant]')].some(el => el.textContent.includes(needle))",
        arg=needle,
        timeout=30_000,
    )


def settled(site: UseChatSite, chat_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    """The stored history once no reply is in progress."""
    deadline = time.monotonic() + timeout
    while True:
        stored = site.stored(chat_id)
        if all(m["status"] != "in_progress" for m in stored) or time.monotonic() > deadline:
            return stored
        time.sleep(0.2)


def view(stored: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m.get("content") or "") for m in stored if m["role"] in ("user", "assistant")]


def test_a_streamed_answer_appears_progressively_and_is_stored_as_shown(
    chat: Any, site: UseChatSite, dev_stack: DevStack
) -> None:
    dev_stack.upstream(reply=words(30), delay_ms=60)
    open_chat(chat, site)
    send(chat, "slow please")
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        texts = assistant_texts(chat)
        if texts:
            seen.append(len(texts[-1]))
        if chat.get_attribute('[data-testid="status"]', "data-state") == "ready" and texts:
            break
        time.sleep(0.05)
    wait_ready(chat)
    assert assistant_texts(chat) == [words(30)]
    partial = sorted({n for n in seen if 0 < n < len(words(30))})
    assert len(partial) >= 3, seen  # the text grew in steps while the stream was open, not all at the end
    stored = settled(site, chat.chat_id)
    assert view(stored) == shown(chat) == [("user", "slow please"), ("assistant", words(30))]
    message_id = chat.get_attribute('[data-testid="message"][data-role="assistant"]', "data-id")
    assert message_id == stored[1]["id"]  # the start chunk's messageId is the stored reply's id
    assert ("chat", chat.chat_id) in site.issued  # a signed URL per request, from the app's backend


def test_stop_aborts_the_fetch_calls_the_stop_route_and_the_stored_reply_is_what_was_shown(
    chat: Any, site: UseChatSite, dev_stack: DevStack
) -> None:
    dev_stack.upstream(reply=words(80), delay_ms=100)
    open_chat(chat, site)
    send(chat, "slow then stop")
    wait_text(chat, "w4 ")
    chat.click('[data-testid="stop"]')
    wait_ready(chat)
    stored = settled(site, chat.chat_id)
    on_page = assistant_texts(chat)[-1]
    time.sleep(0.5)
    assert assistant_texts(chat)[-1] == on_page and 0 < len(on_page) < len(words(80))
    assert ("stop", chat.chat_id) in site.issued
    assert stored[-1]["status"] == "stopped", stored
    assert view(stored) == shown(chat) == [("user", "slow then stop"), ("assistant", on_page)]
    assert chat.query_selector('[data-testid="error"]') is None  # a stop is not an error
    # The conversation goes on from the stopped reply (the resent history matches the stored one).
    dev_stack.upstream()
    send(chat, "after the stop")
    wait_text(chat, "after the stop")
    wait_ready(chat)
    assert view(settled(site, chat.chat_id)) == shown(chat)


def test_a_stop_that_arrives_after_the_reply_ended_shows_the_stored_reply(
    chat: Any, site: UseChatSite, dev_stack: DevStack
) -> None:
    """stop() aborted the fetch, but the stop request comes too late: the turn ran on (a disconnect is no stop)."""
    dev_stack.upstream(reply=words(20), delay_ms=60)
    open_chat(chat, site)

    def late(route: Any) -> None:
        deadline = time.monotonic() + 15
        while site.stored(chat.chat_id)[-1:] and site.stored(chat.chat_id)[-1]["status"] == "in_progress":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        route.continue_()

    chat.route("**/v1/conversations/*/stop?*", late)
    send(chat, "stop too late")
    wait_text(chat, "w3 ")
    chat.click('[data-testid="stop"]')
    wait_text(chat, f"w{20 - 1}")  # the page switched to the stored, complete reply
    wait_ready(chat)
    stored = settled(site, chat.chat_id)
    assert stored[-1]["status"] == "complete"
    assert view(stored) == shown(chat) == [("user", "stop too late"), ("assistant", words(20))]
    dev_stack.upstream()
    send(chat, "and on")  # the resent history matches the stored one
    wait_text(chat, "and on")
    wait_ready(chat)
    assert view(settled(site, chat.chat_id)) == shown(chat)


def test_a_stop_request_that_fails_follows_the_reply_to_its_end_and_the_chat_goes_on(
    chat: Any, site: UseChatSite, dev_stack: DevStack
) -> None:
    """stop() aborted the fetch but the stop route could not be reached: the turn runs on and is stored whole, so a
    page left showing the part it had would be refused (409) on every later message."""
    dev_stack.upstream(reply=words(20), delay_ms=80)
    open_chat(chat, site)
    chat.route("**/v1/conversations/*/stop?*", lambda route: route.abort("connectionreset"))
    send(chat, "stop fails")
    wait_text(chat, "w3 ")
    chat.click('[data-testid="stop"]')
    wait_text(chat, f"w{20 - 1}")  # the page followed the reply (resumeStream) instead of keeping the part it had
    wait_ready(chat)
    stored = settled(site, chat.chat_id)
    assert stored[-1]["status"] == "complete"
    assert view(stored) == shown(chat) == [("user", "stop fails"), ("assistant", words(20))]
    dev_stack.upstream()
    send(chat, "and on")
    wait_text(chat, "and on")
    wait_ready(chat)
    assert chat.query_selector('[data-testid="error"]') is None
    assert view(settled(site, chat.chat_id)) == shown(chat)


def test_regenerate_replaces_the_last_answer_without_a_second_user_turn(
    chat: Any, site: UseChatSite, dev_stack: DevStack
) -> None:
    dev_stack.upstream(reply="first answer")
    open_chat(chat, site)
    send(chat, "hello")
    wait_text(chat, "first answer")
    wait_ready(chat)
    dev_stack.upstream(reply="second answer")
    chat.click('[data-testid="regenerate"]')
    wait_text(chat, "second answer")
    wait_ready(chat)
    assert shown(chat) == [("user", "hello"), ("assistant", "second answer")]
    stored = settled(site, chat.chat_id)
    assert view(stored) == shown(chat)  # no duplicate user turn, the old answer out of the active history
    everything = site.stored(chat.chat_id, include_superseded=True)
    assert [(m["content"], m["status"]) for m in everything if m["role"] == "assistant"] == [
        ("first answer", "superseded"),
        ("second answer", "complete"),
    ]
    dev_stack.upstream()
    send(chat, "and then")
    wait_text(chat, "and then")
    wait_ready(chat)
    assert view(settled(site, chat.chat_id)) == shown(chat)
    sent = dev_stack.requests()[-1]["body"]["messages"]
    assert [m.get("content") for m in sent] == ["hello", "second answer", "and then"]


def test_reload_mid_answer_shows_the_partial_reply_and_resumes_it(
    chat: Any, site: UseChatSite, dev_stack: DevStack
) -> None:
    dev_stack.upstream(reply=words(), delay_ms=120)
    open_chat(chat, site)
    send(chat, "slow and reload")
    wait_text(chat, "w8 ")  # a checkpoint (about once a second) holds some of it
    chat.reload()  # useChat({resume: true}) reconnects: GET /v1/chat/{id}/stream with a fresh signed URL
    wait_text(chat, f"w{WORDS - 1}")
    wait_ready(chat)
    assert shown(chat) == [("user", "slow and reload"), ("assistant", words())]  # replayed once, no duplicates
    assert ("stream", chat.chat_id) in site.issued
    stored = settled(site, chat.chat_id)
    assert view(stored) == shown(chat) and stored[-1]["status"] == "complete"


def test_a_client_side_tool_call_round_trip(chat: Any, site: UseChatSite, dev_stack: DevStack) -> None:
    dev_stack.upstream(tool_call={"name": "getLocation", "arguments": "{}"})
    open_chat(chat, site)
    send(chat, "where am I?")
    wait_text(chat, "Echo (")
    wait_ready(chat)
    assert len(chat.query_selector_all('[data-testid="message"][data-role="assistant"]')) == 1  # one message
    tool = chat.query_selector('[data-testid="tool"][data-tool="getLocation"]')
    assert tool is not None and tool.get_attribute("data-state") == "output-available"
    stored = settled(site, chat.chat_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["function"]["name"] == "getLocation"
    assert stored[2]["content"] == '{"city":"Paris"}'  # addToolResult's output, as the page sent it
    assert stored[3]["content"] == assistant_texts(chat)[0]
    sent = dev_stack.requests()[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]  # each once at the provider


def test_reload_during_the_answer_after_a_client_tool_resumes_it_and_the_chat_goes_on(
    chat: Any, site: UseChatSite, dev_stack: DevStack
) -> None:
    dev_stack.upstream(tool_call={"name": "getLocation", "arguments": "{}"}, reply=words(), delay_ms=120)
    open_chat(chat, site)
    send(chat, "where am I, slowly?")
    wait_text(chat, "w6 ")  # the answer after the tool result is streaming
    chat.reload()
    wait_text(chat, f"w{WORDS - 1}")
    wait_ready(chat)
    tool = chat.query_selector('[data-testid="tool"][data-tool="getLocation"]')
    assert tool is not None and tool.get_attribute("data-state") == "output-available"
    assert assistant_texts(chat)[-1] == words()  # resumed as its own message (docs: its stored id), once
    stored = settled(site, chat.chat_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert view(stored) == shown(chat)
    dev_stack.upstream()
    send(chat, "thanks")  # what the page resends still matches the stored history
    wait_text(chat, "thanks")
    wait_ready(chat)
    assert view(settled(site, chat.chat_id)) == shown(chat)


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("expired", '"code": "expired"'),
        ("rate-limited", '"code": "rate_limited"'),
        ("provider-down", '"code": "upstream_error"'),
        ("cut-mid-answer", "upstream_error: "),
    ],
)
def test_errors_surface_in_use_chat_error(
    chat: Any, site: UseChatSite, dev_stack: DevStack, scenario: str, expected: str
) -> None:
    open_chat(chat, site)
    if scenario == "expired":
        site.expire_next = True
    elif scenario == "rate-limited":
        dev_stack.upstream(faults=[{"status": 429, "retry_after": 0}] * 6)
    elif scenario == "provider-down":
        dev_stack.upstream(faults=[{"status": 503}] * 6)
    else:
        dev_stack.upstream(reply="one two three four five six", cut_after=3)
    send(chat, "hello")
    chat.wait_for_selector('[data-testid="error"]', timeout=30_000)
    assert expected in chat.inner_text('[data-testid="error"]')
    assert chat.get_attribute('[data-testid="status"]', "data-state") == "error"
    stored = settled(site, chat.chat_id)
    if scenario == "cut-mid-answer":  # after the first byte: the partial reply is kept, marked incomplete
        assert assistant_texts(chat) == ["one two "]
        assert view(stored) == [("user", "hello"), ("assistant", "one two ")] and stored[-1]["status"] == "incomplete"
    else:  # before the first byte: nothing of the turn is stored
        assert stored == [] and assistant_texts(chat) == []


def test_text_stream_transport(chat: Any, site: UseChatSite) -> None:
    open_chat(chat, site, "?transport=text")
    send(chat, "hello text")
    wait_text(chat, "Echo (1 messages): hello text")
    wait_ready(chat)
    assert (
        view(settled(site, chat.chat_id))
        == shown(chat)
        == [
            ("user", "hello text"),
            ("assistant", "Echo (1 messages): hello text"),
        ]
    )


def test_openai_node_helpers_work_from_chromium_on_another_origin(
    browser: Any, site: UseChatSite, dev_stack: DevStack
) -> None:
    dev_stack.upstream(tool_call={"name": "getLocation", "arguments": "{}"})
    signed = site.sign({"method": "POST", "path": "/v1/chat/completions", "stateless": True})
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{site.origin}/probe.html")
    page.wait_for_function("() => typeof window.runHelpers === 'function'")
    try:
        results = page.evaluate(
            "signed => window.runHelpers(signed)", {"baseURL": signed["base_url"], "query": signed["query"]}
        )
        requests = dev_stack.requests()
    finally:
        context.close()
        dev_stack.upstream()
    assert results["stream"] == {"ok": "Echo (1 messages): via stream()"}, results
    assert results["parse"] == {"ok": "Echo (1 messages): via parse()"}, results
    assert results["runTools"] == {
        "ok": {"content": "Echo (3 messages): via runTools()", "messages": ["user", "assistant", "tool", "assistant"]}
    }, results
    assert len(requests) == 4  # stream, parse, and runTools' two calls all reached the provider


@pytest.fixture(scope="module")
def gateway(dist: Any) -> Iterator[FakeGateway]:
    """A Function URL that records each CORS preflight (the real stack cannot report what browsers ask for)."""
    fake = FakeGateway(dist)
    fake.start()
    yield fake
    fake.stop()


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
