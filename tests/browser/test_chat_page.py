"""The chat page in real Chromium, against `make dev` with a slow, recorded upstream stream."""

from __future__ import annotations

import json
import time

from tests.browser.conftest import DevStack, shot
from tests.conftest import RECORDED

FIXTURES = RECORDED / "openai-sse"
INDEX = {e["file"]: e for e in json.loads((FIXTURES / "index.json").read_text())}
ASSISTANT = '[data-testid="message"][data-role="assistant"]'


def ask(page, text: str) -> None:
    page.fill('[data-testid="input"]', text)
    page.click('[data-testid="send"]')


def test_first_words_appear_before_the_stream_ends_and_reload_keeps_the_conversation(page, dev_stack: DevStack) -> None:
    entry = INDEX["e2aad469b71d.sse"]
    dev_stack.upstream(replay=str(FIXTURES / entry["file"]), delay_ms=120)
    ask(page, "What's the weather in San Francisco?")
    answer = page.locator(ASSISTANT).last
    page.wait_for_function("() => document.querySelector('[data-role=assistant] .text')?.textContent.length > 0")
    assert answer.get_attribute("data-state") == "streaming"  # words on screen while the stream is still going
    partial = answer.locator(".text").text_content()
    assert 0 < len(partial) < len(entry["choice0_text"])
    assert page.get_attribute('[data-testid="status"]', "data-state") == "streaming"
    shot(page, "streaming")
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]', timeout=30_000)
    assert answer.locator(".text").text_content() == entry["choice0_text"]
    conversation = page.evaluate("location.hash.slice(1)")
    assert conversation.startswith("conv_")

    page.reload()
    page.wait_for_selector('[data-testid="status"][data-state="idle"]')
    items = page.locator('[data-testid="conversation"]')
    assert items.first.get_attribute("data-id") == conversation
    assert items.first.text_content() == "What's the weather in San Francisco?"
    messages = page.locator('[data-testid="message"]')
    assert messages.count() == 2
    assert messages.nth(0).text_content() == "What's the weather in San Francisco?"
    assert messages.nth(1).locator(".text").text_content() == entry["choice0_text"]
    shot(page, "reloaded")


def test_stop_leaves_a_partial_answer_marked_as_stopped(page, dev_stack: DevStack) -> None:
    entry = INDEX["d61558011839.sse"]
    dev_stack.upstream(replay=str(FIXTURES / entry["file"]), delay_ms=60)
    ask(page, "Give me the weather as JSON")
    page.wait_for_function("() => document.querySelector('[data-role=assistant] .text')?.textContent.length > 20")
    page.click('[data-testid="stop"]')
    answer = page.locator(ASSISTANT).last
    page.wait_for_selector(f'{ASSISTANT}[data-state="stopped"]')
    text = answer.locator(".text").text_content()
    assert 20 < len(text) < len(entry["choice0_text"]) and entry["choice0_text"].startswith(text)
    assert answer.locator(".note").text_content() == "(stopped)"
    assert page.get_attribute('[data-testid="status"]', "data-state") == "stopped"
    shot(page, "stopped")


def test_an_expired_url_is_renewed_once_and_the_turn_goes_through(page, dev_stack: DevStack) -> None:
    dev_stack.upstream()
    ask(page, "first question")
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]')
    time.sleep(5)  # the demo backend signs 4-second chat URLs here; the page still holds the old one
    ask(page, "second question")
    page.wait_for_function("() => document.querySelectorAll('[data-role=assistant][data-state=done]').length === 2")
    assert page.locator(ASSISTANT).last.locator(".text").text_content() == "Echo (3 messages): second question"
    assert page.text_content('[data-testid="status"]') == "Ready (link renewed)"


def test_model_output_is_rendered_as_text_never_as_markup(page, dev_stack: DevStack) -> None:
    payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> <b>bold?</b>'
    dev_stack.upstream(reply=payload)
    ask(page, "say something dangerous")
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]')
    answer = page.locator(ASSISTANT).last
    assert answer.locator(".text").text_content() == payload
    assert answer.locator("script, img, b").count() == 0
    assert page.evaluate("window.__pwned") is None
    shot(page, "script-as-text")


def test_errors_are_shown_in_words(page, dev_stack: DevStack) -> None:
    dev_stack.upstream(faults=[{"status": 500}] * 3)
    ask(page, "is anyone there?")
    page.wait_for_selector(f'{ASSISTANT}[data-state="error"]')
    assert "upstream down" in page.text_content('[data-testid="error"]')
    shot(page, "upstream-down")
    dev_stack.upstream(faults=[{"status": 429, "retry_after": 7}] * 3)
    ask(page, "and now?")
    page.wait_for_function("() => document.querySelectorAll('[data-role=assistant][data-state=error]').length === 2")
    assert page.text_content('[data-testid="error"]') == "Rate limited — try again in 7 seconds."


def test_a_dropped_connection_is_retried_and_nothing_is_shown_twice(page, dev_stack: DevStack) -> None:
    dev_stack.upstream()
    stream_url = dev_stack.endpoints["stream_url"]
    dropped = []

    def drop_first_chat_post(route) -> None:
        if route.request.method == "POST" and not dropped:
            dropped.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route(f"{stream_url}v1/chat/completions**", drop_first_chat_post)
    started = time.monotonic()
    ask(page, "are you still there?")
    page.wait_for_selector('[data-testid="status"][data-state="retrying"]')
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]', timeout=20_000)
    assert dropped and time.monotonic() - started >= 1.0  # waited the first 1 s back-off
    users = page.locator('[data-testid="message"][data-role="user"]')
    assert users.count() == 1 and page.locator(ASSISTANT).count() == 1
    assert page.locator(ASSISTANT).last.locator(".text").text_content() == "Echo (1 messages): are you still there?"
