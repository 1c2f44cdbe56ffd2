"""The chat page in real Chromium, against `make dev` with a slow upstream: what the user sees, and what is stored."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from local.demo_backend import DemoBackend
from tests.browser.conftest import DevStack, shot
from tests.conftest import RECORDED

FIXTURES = RECORDED / "openai-sse"
INDEX = {e["file"]: e for e in json.loads((FIXTURES / "index.json").read_text())}
ASSISTANT = '[data-testid="message"][data-role="assistant"]'
# A long answer with characters outside the BMP: event ids count code points, JavaScript strings count UTF-16.
REPLY = " ".join(f"Step {i}: 𝜋 is about 3.14." for i in range(1, 13))
# Reads the answer on screen and presses Stop in the same task, so nothing can arrive in between.
STOP_NOW = """() => {
  const text = [...document.querySelectorAll('[data-role=assistant] .text')].at(-1).textContent;
  document.querySelector('[data-testid=stop]').click();
  return text;
}"""


def ask(page: Any, text: str) -> None:
    page.fill('[data-testid="input"]', text)
    page.click('[data-testid="send"]')


def answer_text(page: Any) -> str:
    return str(page.locator(ASSISTANT).last.locator(".text").text_content())


def wait_for_answer_longer_than(page: Any, chars: int) -> None:
    page.wait_for_function(
        "n => ([...document.querySelectorAll('[data-role=assistant] .text')].at(-1)?.textContent.length || 0) > n",
        arg=chars,
    )


def server(dev_stack: DevStack, page: Any, action: str, conversation_id: str | None = None) -> tuple[int, Any]:
    """What the Stream function has stored for this browser's demo user (its cookie), through a signed URL."""
    subject = next(c["value"] for c in page.context.cookies() if c["name"] == "sigstream_demo_user")
    e = dev_stack.endpoints
    backend = DemoBackend(e["sign_url"], e["aws_access_key_id"], e["aws_secret_access_key"], e["region"])
    status, signed = backend.sign(subject, {"action": action, "conversation_id": conversation_id})
    assert status == 200, signed
    method = "DELETE" if action == "delete" else "GET"
    try:
        with urllib.request.urlopen(urllib.request.Request(signed["url"], method=method), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def upstream_requests(dev_stack: DevStack) -> list[dict[str, Any]]:
    """The chat requests the embedded upstream received since its last reset."""
    with urllib.request.urlopen(dev_stack.control_url + "/requests", timeout=10) as response:
        return list(json.loads(response.read()))


def stored_messages(dev_stack: DevStack, page: Any, conversation_id: str) -> list[dict[str, Any]]:
    status, doc = server(dev_stack, page, "messages", conversation_id)
    assert status == 200, doc
    return list(doc["data"])


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
    assert items.first.locator(".title").text_content() == "What's the weather in San Francisco?"
    messages = page.locator('[data-testid="message"]')
    assert messages.count() == 2
    assert messages.nth(0).locator(".role").text_content() == "You"
    assert messages.nth(0).locator(".text").text_content() == "What's the weather in San Francisco?"
    assert messages.nth(1).locator(".role").text_content() == "Assistant"
    assert messages.nth(1).locator(".text").text_content() == entry["choice0_text"]
    shot(page, "reloaded")


def test_a_new_conversation_is_listed_at_once_and_a_reload_mid_answer_resumes_it(page, dev_stack: DevStack) -> None:
    # Silent for 2 s after the role event: the first word is late, the conversation must not be.
    dev_stack.upstream(reply=REPLY, delay_ms=150, stall_after=1, stall_seconds=2)
    resumes: list[Any] = []
    page.on("request", lambda request: resumes.append(request) if "/stream?" in request.url else None)
    ask(page, "Count the steps")
    page.wait_for_function("() => location.hash.length > 1")
    conversation = page.evaluate("location.hash.slice(1)")
    item = page.locator(f'[data-testid="conversation"][data-id="{conversation}"]')
    item.wait_for()
    assert answer_text(page) == ""  # listed before the first word arrived
    assert item.locator(".title").text_content() == "Count the steps"
    deadline = time.monotonic() + 5
    while conversation not in [c["id"] for c in server(dev_stack, page, "list")[1]["data"]]:
        assert time.monotonic() < deadline, "the server does not list the conversation while its turn runs"
        time.sleep(0.1)

    wait_for_answer_longer_than(page, 40)
    stored = stored_messages(dev_stack, page, conversation)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "in_progress")]
    page.reload()
    page.wait_for_selector(f'{ASSISTANT}[data-state="streaming"]')
    partial = answer_text(page)
    assert partial and REPLY.startswith(partial) and len(partial) < len(REPLY)  # the stored partial answer, at once
    assert page.locator('[data-testid="message"][data-role="user"] .text').all_text_contents() == ["Count the steps"]
    shot(page, "resumed")
    assert item.locator('[data-testid="delete-conversation"]').is_disabled()  # not while its answer is on screen
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]', timeout=30_000)
    assert answer_text(page) == REPLY  # resumed where the stored text ended: nothing twice, nothing missing
    assert page.get_attribute('[data-testid="status"]', "data-state") == "idle"
    assert item.locator('[data-testid="delete-conversation"]').is_enabled()
    assert resumes, "the page did not call GET /v1/conversations/{id}/stream"
    header = resumes[0].all_headers().get("last-event-id")
    assert header is not None and 0 < int(header) <= len(partial)  # code points, as the gateway counts
    stored = stored_messages(dev_stack, page, conversation)
    assert [(m["role"], m["status"], m["content"]) for m in stored] == [
        ("user", "complete", "Count the steps"),
        ("assistant", "complete", REPLY),
    ]


def test_stop_keeps_exactly_the_text_on_screen_and_a_reload_shows_it(page, dev_stack: DevStack) -> None:
    dev_stack.upstream(reply=REPLY, delay_ms=100)
    ask(page, "Count slowly")
    wait_for_answer_longer_than(page, 60)
    on_screen = page.evaluate(STOP_NOW)
    page.wait_for_selector('[data-testid="status"][data-state="stopped"]', timeout=10_000)
    answer = page.locator(ASSISTANT).last
    assert answer.get_attribute("data-state") == "stopped"
    assert answer.locator(".note").text_content() == "(stopped)"
    assert answer_text(page) == on_screen and 40 < len(on_screen) < len(REPLY) and REPLY.startswith(on_screen)
    shot(page, "stopped")
    conversation = page.evaluate("location.hash.slice(1)")
    stored = stored_messages(dev_stack, page, conversation)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "stopped")]
    assert stored[1]["content"] == on_screen  # the history holds what the user saw, not the whole answer
    time.sleep(1.5)  # a stopped turn stays stopped: the provider was let go, nothing is appended later
    assert stored_messages(dev_stack, page, conversation)[1]["content"] == on_screen

    page.reload()
    page.wait_for_selector('[data-testid="status"][data-state="idle"]')
    assert answer_text(page) == on_screen
    assert page.locator(ASSISTANT).last.locator(".note").text_content() == "(stopped)"


def test_stop_while_the_model_has_not_answered_yet(page, dev_stack: DevStack) -> None:
    dev_stack.upstream(reply=REPLY, stall_after=0, stall_seconds=8)  # the provider thinks before its first event
    ask(page, "Think hard")
    page.wait_for_selector('[data-testid="status"][data-state="connecting"]')
    conversation = page.evaluate("location.hash.slice(1)")
    deadline = time.monotonic() + 10
    while server(dev_stack, page, "messages", conversation)[0] != 200:  # the turn is stored from its start
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert page.evaluate(STOP_NOW) == ""
    page.wait_for_selector('[data-testid="status"][data-state="stopped"]', timeout=10_000)
    assert answer_text(page) == ""
    assert page.locator(ASSISTANT).last.locator(".note").text_content() == "(stopped)"
    reply = stored_messages(dev_stack, page, conversation)[-1]
    assert (reply["role"], reply["status"], reply["content"] or "") == ("assistant", "stopped", "")
    page.reload()
    page.wait_for_selector('[data-testid="status"][data-state="idle"]')
    assert page.locator('[data-testid="message"] .text').all_text_contents() == ["Think hard", ""]


def test_stop_while_following_a_resumed_answer(page, dev_stack: DevStack) -> None:
    dev_stack.upstream(reply=REPLY, delay_ms=150)
    ask(page, "Count again")
    wait_for_answer_longer_than(page, 30)
    page.reload()
    page.wait_for_selector(f'{ASSISTANT}[data-state="streaming"]')
    resumed_from = len(answer_text(page))
    wait_for_answer_longer_than(page, resumed_from + 30)  # new text from the resume route
    on_screen = page.evaluate(STOP_NOW)
    page.wait_for_selector('[data-testid="status"][data-state="stopped"]', timeout=10_000)
    assert answer_text(page) == on_screen and REPLY.startswith(on_screen) and len(on_screen) < len(REPLY)
    conversation = page.evaluate("location.hash.slice(1)")
    reply = stored_messages(dev_stack, page, conversation)[-1]
    assert (reply["status"], reply["content"]) == ("stopped", on_screen)
    page.reload()
    page.wait_for_selector('[data-testid="status"][data-state="idle"]')
    assert answer_text(page) == on_screen


def test_each_conversation_can_be_deleted(page, dev_stack: DevStack) -> None:
    dev_stack.upstream()
    ask(page, "first conversation")
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]')
    first = page.evaluate("location.hash.slice(1)")
    page.click('[data-testid="new-chat"]')
    ask(page, "second conversation")
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]')
    second = page.evaluate("location.hash.slice(1)")
    items = page.locator('[data-testid="conversation"]')
    page.wait_for_function("() => document.querySelectorAll('[data-testid=conversation]').length === 2")

    page.locator(f'[data-testid="conversation"][data-id="{first}"] [data-testid="delete-conversation"]').click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=conversation]').length === 1")
    assert items.first.get_attribute("data-id") == second
    assert answer_text(page) == "Echo (1 messages): second conversation"  # the open one is untouched
    assert server(dev_stack, page, "messages", first)[0] == 404
    assert [c["id"] for c in server(dev_stack, page, "list")[1]["data"]] == [second]

    page.locator('[data-testid="delete-conversation"]').click()  # the open one: the page starts afresh
    page.wait_for_function("() => document.querySelectorAll('[data-testid=conversation]').length === 0")
    assert page.locator('[data-testid="message"]').count() == 0
    assert page.evaluate("location.hash") == ""
    assert server(dev_stack, page, "list")[1]["data"] == []


def test_a_390_pixel_wide_phone_keeps_the_composer_on_screen(browser: Any, dev_stack: DevStack) -> None:
    dev_stack.upstream()
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(dev_stack.endpoints["web_url"])
        page.wait_for_selector('[data-testid="status"][data-state="idle"]')
        for text in ("hello from a phone", "and a second, longer question that wraps over several lines"):
            ask(page, text)
            page.wait_for_function(
                "n => document.querySelectorAll('[data-role=assistant][data-state=done]').length === n",
                arg=page.locator('[data-testid="message"][data-role="user"]').count(),
            )
        for name in ("input", "send", "stop"):
            box = page.locator(f'[data-testid="{name}"]').bounding_box()
            assert box is not None and box["x"] >= 0 and box["y"] >= 0, name
            assert box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844, (name, box)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        assert page.locator('[data-testid="conversation"]').count() == 1
        assert page.locator(".message .role").all_text_contents() == ["You", "Assistant", "You", "Assistant"]
        note = page.locator('[data-testid="upstream-note"]')
        assert note.is_visible() and "echo" in note.text_content().lower()  # make dev's embedded upstream
        shot(page, "phone-390")
    finally:
        context.close()
    assert errors == []


def test_model_output_is_rendered_as_text_never_as_markup(page, dev_stack: DevStack) -> None:
    payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> <b>bold?</b>'
    dev_stack.upstream(reply=payload)
    ask(page, "say something dangerous")
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]')
    answer = page.locator(ASSISTANT).last
    assert answer.locator(".text").text_content() == payload
    assert answer.locator("script, img, b").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.reload()  # and again when it comes back from the history
    page.wait_for_selector('[data-testid="status"][data-state="idle"]')
    assert answer_text(page) == payload and page.locator(f"{ASSISTANT} script, {ASSISTANT} img").count() == 0
    assert page.evaluate("window.__pwned") is None
    shot(page, "script-as-text")


def test_an_expired_url_is_renewed_once_and_the_turn_goes_through(page, dev_stack: DevStack) -> None:
    dev_stack.upstream()
    ask(page, "first question")
    page.wait_for_selector(f'{ASSISTANT}[data-state="done"]')
    time.sleep(5)  # the demo backend signs 4-second chat URLs here; the page still holds the old one
    ask(page, "second question")
    page.wait_for_function("() => document.querySelectorAll('[data-role=assistant][data-state=done]').length === 2")
    assert answer_text(page) == "Echo (3 messages): second question"
    assert page.text_content('[data-testid="status"]') == "Ready (link renewed)"


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
    assert answer_text(page) == "Echo (1 messages): are you still there?"


class CuttingProxy:
    """A TCP hop to the Stream URL that drops the connection after `cut_after` response bytes (a lost network)."""

    def __init__(self, target: str, cut_after: int) -> None:
        parts = urllib.parse.urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.cut_after = cut_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:  # the browser may open a spare connection first
                client, _ = self.listener.accept()
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
        sent = 0
        with contextlib.suppress(OSError):
            while sent < self.cut_after and (data := upstream.recv(512)):
                client.sendall(data)
                sent += len(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other direction's thread; close() alone would not
            sock.close()

    def close(self) -> None:
        self.listener.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)


def test_a_connection_lost_mid_answer_is_resumed_not_sent_again(page, dev_stack: DevStack) -> None:
    dev_stack.upstream(reply=REPLY, delay_ms=100)
    stream_url = dev_stack.endpoints["stream_url"]
    proxy = CuttingProxy(stream_url, cut_after=2500)  # the status line, headers and a few words, then gone
    routed: list[str] = []

    def through_the_proxy(route: Any) -> None:
        if route.request.method == "POST" and not routed:
            routed.append(route.request.url)
            route.continue_(url=route.request.url.replace(stream_url.rstrip("/"), proxy.url))
        else:
            route.continue_()

    page.route(f"{stream_url}v1/chat/completions**", through_the_proxy)
    resumes: list[Any] = []
    page.on("request", lambda request: resumes.append(request) if "/stream?" in request.url else None)
    try:
        ask(page, "Count while the network drops")
        page.wait_for_selector('[data-testid="status"][data-state="retrying"]', timeout=10_000)
        cut_at = answer_text(page)
        assert cut_at and REPLY.startswith(cut_at)
        page.wait_for_selector(f'{ASSISTANT}[data-state="done"]', timeout=30_000)
    finally:
        proxy.close()
    assert len(resumes) == 1
    assert answer_text(page) == REPLY  # the server kept writing it; the page followed from what it had
    assert page.locator('[data-testid="message"][data-role="user"]').count() == 1
    conversation = page.evaluate("location.hash.slice(1)")
    stored = stored_messages(dev_stack, page, conversation)
    assert [(m["role"], m["status"], m["content"]) for m in stored] == [
        ("user", "complete", "Count while the network drops"),
        ("assistant", "complete", REPLY),
    ]
    requests = [r["body"]["messages"][-1]["content"] for r in upstream_requests(dev_stack)]
    assert requests == ["Count while the network drops"]  # asked once: the question was not sent again


def test_the_page_reads_event_ids_however_the_bytes_are_split(page) -> None:
    stream = 'id: 0\ndata: {"a":1}\n\n: keep-alive\n\nid: 7\r\ndata: one\r\ndata: two\r\n\r\ndata: [DONE]\n\n'
    splits = page.evaluate(
        """async (stream) => {
            const { SseParser, codePoints } = await import("./sse.js");
            const runs = [];
            for (let cut = 0; cut <= stream.length; cut++) {
                const parser = new SseParser();
                runs.push([...parser.feed(stream.slice(0, cut)), ...parser.feed(stream.slice(cut))]);
            }
            return { runs, points: codePoints("a𝜋b") };
        }""",
        stream,
    )
    expected = [{"id": "0", "data": '{"a":1}'}, {"id": "7", "data": "one\ntwo"}, {"id": None, "data": "[DONE]"}]
    assert {str(run) for run in splits["runs"]} == {str(expected)}
    assert splits["points"] == 3  # what Last-Event-ID counts: code points, not UTF-16 units


def test_a_second_tab_follows_the_answer_and_its_stop_ends_it_in_both(page, dev_stack: DevStack) -> None:
    dev_stack.upstream(reply=REPLY, delay_ms=120)
    ask(page, "Count for two tabs")
    wait_for_answer_longer_than(page, 20)
    conversation = page.evaluate("location.hash.slice(1)")
    other = page.context.new_page()  # the same user (cookie), e.g. the chat opened again in a new tab
    errors: list[str] = []
    other.on("pageerror", lambda exc: errors.append(str(exc)))
    other.goto(f"{dev_stack.endpoints['web_url']}#{conversation}")
    other.wait_for_selector(f'{ASSISTANT}[data-state="streaming"]')
    wait_for_answer_longer_than(other, len(answer_text(other)) + 20)
    on_screen = other.evaluate(STOP_NOW)
    other.wait_for_selector('[data-testid="status"][data-state="stopped"]', timeout=10_000)
    page.wait_for_selector('[data-testid="status"][data-state="idle"]', timeout=10_000)  # its stream ended too
    for tab in (page, other):
        assert answer_text(tab) == on_screen  # both show what is stored, not what each had received
        assert tab.locator(ASSISTANT).last.locator(".note").text_content() == "(stopped)"
    reply = stored_messages(dev_stack, page, conversation)[-1]
    assert (reply["status"], reply["content"]) == ("stopped", on_screen)
    other.close()
    assert errors == []
