"""A fake gateway for the useChat page: the page's origin (static bundle + signed-URL backend) and, on another port, a
Function URL whose /v1/chat answers with our UiStreamEncoder fed by scripted OpenAI chunks. Real sockets, real CORS."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sigstream.core.errors import BadRequestError, ExpiredError, SigstreamError
from stream_app.chat.ui_messages import parse_ui_chat_body, response_message_id
from stream_app.chat.ui_stream import (
    TEXT_STREAM_HEADERS,
    UI_STREAM_HEADERS,
    TextStreamEncoder,
    UiStreamEncoder,
    stream_format,
)
from tests.usechat import recorded_chunks

SLOW_WORDS = 30
SLOW_DELAY = 0.12


def _chunk(**delta: Any) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "model": "fake-model", "choices": [{"index": 0, "delta": delta}]}


def _finish(reason: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


USAGE = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}


@dataclass
class LiveReply:
    """A reply being generated: what a resuming client replays and follows (the conversation store's role)."""

    message_id: str
    text: str = ""
    done: bool = False
    stopped: bool = False
    stop_requested: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)


@dataclass
class ChatRecord:
    """What the fake knows of one chat: the UI messages last posted and the reply in progress."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    live: LiveReply | None = None


class FakeGateway:
    """Both origins, the scripted upstream, and everything the tests assert on."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist
        self.lock = threading.Lock()
        self.chats: dict[str, ChatRecord] = {}
        self.chat_requests: list[dict[str, Any]] = []
        self.stop_requests: list[str] = []
        self.resume_requests: list[tuple[str, int]] = []
        self.preflights: dict[str, set[str]] = {}
        self.probe_requests: dict[str, set[str]] = {}
        self.expire_next_url = False
        self.replies = 0
        self._servers = [self._server(self._page_handler()), self._server(self._api_handler())]
        self.page_origin = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.api_origin = f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    @staticmethod
    def _server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        return server

    def start(self) -> None:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def chat(self, chat_id: str) -> ChatRecord:
        with self.lock:
            return self.chats.setdefault(chat_id, ChatRecord())

    # --- the page's origin: static files, config.js and the app's signed-URL backend -------------------------------

    def _page_handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Page(_Quiet):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                parts = path.strip("/").split("/")
                if path == "/probe.html":
                    html = b'<!doctype html><meta charset="utf-8"><script type="module" src="/probe.js"></script>'
                    return self.reply(200, html, "text/html")
                if path == "/probe.js":
                    return self.reply(200, (gateway.dist / "probe.js").read_bytes(), "text/javascript")
                if len(parts) >= 2 and parts[0] == "chat":
                    name = parts[2] if len(parts) > 2 else "index.html"
                    if name == "config.js":
                        config = {
                            "backend": "/backend/signed-url",
                            "chatId": parts[1],
                            "messages": gateway.chat(parts[1]).messages,
                        }
                        return self.reply(
                            200, f"window.SIGSTREAM_USECHAT = {json.dumps(config)};".encode(), "text/javascript"
                        )
                    if name in ("index.html", "app.js"):
                        kind = "text/html" if name.endswith(".html") else "text/javascript"
                        return self.reply(200, (gateway.dist / name).read_bytes(), kind)
                return self.reply(404, b"not found", "text/plain")

            def do_POST(self) -> None:
                if urlsplit(self.path).path != "/backend/signed-url":
                    return self.reply(404, b"not found", "text/plain")
                doc = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                token = "expired" if gateway.expire_next_url else uuid.uuid4().hex
                gateway.expire_next_url = False
                chat_id, api = doc["chatId"], gateway.api_origin
                route = {
                    "chat": "/v1/chat",
                    "stream": f"/v1/chat/{chat_id}/stream",
                    "stop": f"/v1/conversations/{chat_id}/stop",
                }[doc["purpose"]]
                self.reply(200, json.dumps({"url": f"{api}{route}?conversation={chat_id}&sig={token}"}).encode())

        return Page

    # --- the Function URL: /v1/chat, its reconnect and stop routes, and the CORS probe ------------------------------

    def _api_handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Api(_Quiet):
            def cors(self) -> None:
                self.send_header("access-control-allow-origin", self.headers.get("origin") or "*")
                self.send_header("access-control-expose-headers", "x-vercel-ai-ui-message-stream, x-request-id")

            def do_OPTIONS(self) -> None:
                requested = self.headers.get("access-control-request-headers") or ""
                with gateway.lock:
                    gateway.preflights.setdefault(_probe_name(self.path), set()).update(
                        h.strip().lower() for h in requested.split(",") if h.strip()
                    )
                self.send_response(204)
                self.cors()
                self.send_header("access-control-allow-methods", "GET, POST, OPTIONS")
                self.send_header("access-control-allow-headers", requested or "content-type")
                self.send_header("access-control-max-age", "0")
                self.end_headers()

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path.startswith("/probe/"):
                    gateway.record_probe(self)
                    return self.empty(204)
                parts = url.path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["v1", "chat"] and parts[3] == "stream":
                    if not self.signed(url.query, parts[2]):
                        return None
                    return gateway.resume(self, parts[2])
                return self.error(404, "not_found", "No such route.")

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if url.path.startswith("/probe/"):
                    gateway.record_probe(self)
                    return gateway.probe(self, url.path, json.loads(body or b"{}"))
                parts = url.path.strip("/").split("/")
                if url.path == "/v1/chat":
                    query = parse_qs(url.query)
                    if not self.signed(url.query, query.get("conversation", [""])[0]):
                        return None
                    return gateway.answer(self, json.loads(body), query["conversation"][0])
                if len(parts) == 4 and parts[:2] == ["v1", "conversations"] and parts[3] == "stop":
                    if not self.signed(url.query, parts[2]):
                        return None
                    gateway.request_stop(parts[2])
                    return self.reply(200, json.dumps({"stopped": True}).encode())
                return self.error(404, "not_found", "No such route.")

            def signed(self, query: str, chat_id: str) -> bool:
                params = parse_qs(query)
                if params.get("sig") == ["expired"]:
                    error = ExpiredError()
                    self.error(error.status, error.code, error.message)
                    return False
                if not params.get("sig") or params.get("conversation") != [chat_id]:
                    self.error(403, "invalid_signature", "The URL signature is not valid.")
                    return False
                return True

        return Api

    # --- behaviour --------------------------------------------------------------------------------------------------

    def record_probe(self, handler: _Quiet) -> None:
        with self.lock:
            self.probe_requests.setdefault(_probe_name(handler.path), set()).update(k.lower() for k in handler.headers)

    def probe(self, handler: _Quiet, path: str, doc: dict[str, Any]) -> None:
        """Answers for the CORS probe: a UI stream, a text stream, or OpenAI SSE / JSON for openai-node."""
        if "/ai-default-send" in path:
            encoder = UiStreamEncoder("probe")
            return handler.stream(UI_STREAM_HEADERS, _once(encoder.text_delta("ok") + encoder.finish()))
        if "/ai-text-send" in path:
            return handler.stream(TEXT_STREAM_HEADERS, _once(b"ok"))
        if doc.get("stream"):
            raw = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in recorded_chunks("83b060bae42e.sse"))
            return handler.stream({"content-type": "text/event-stream"}, _once(raw + b"data: [DONE]\n\n"))
        completion = {
            "id": "chatcmpl-probe",
            "object": "chat.completion",
            "created": 0,
            "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Foo!"}, "finish_reason": "stop"}],
        }
        return handler.reply(200, json.dumps(completion).encode())

    def request_stop(self, chat_id: str) -> None:
        self.stop_requests.append(chat_id)
        live = self.chat(chat_id).live
        if live is not None:
            with live.changed:
                live.stop_requested = True
                live.changed.notify_all()

    def answer(self, handler: _Quiet, doc: dict[str, Any], conversation: str) -> None:
        try:
            body = parse_ui_chat_body(doc)
            if body.chat_id != conversation:
                raise BadRequestError("id names another conversation than the signed URL", param="id")
        except SigstreamError as error:
            return handler.error(error.status, error.code, error.message)
        chat = self.chat(conversation)
        messages = body.openai_messages()
        with self.lock:
            self.replies += 1
            number = self.replies
        message_id = response_message_id(body, f"msg-{uuid.uuid4().hex[:10]}")
        self.chat_requests.append(
            {
                "trigger": body.trigger,
                "messageId": body.message_id,
                "openai": messages,
                "accept": handler.headers.get("accept"),
                "tools": body.params.get("tools"),
                "response_message_id": message_id,
            }
        )
        chat.messages = doc["messages"]
        last = messages[-1] if messages else {}
        prompt = last.get("content") if last.get("role") == "user" and isinstance(last.get("content"), str) else ""
        if stream_format(handler.headers.get("accept")) == "text":
            text_encoder = TextStreamEncoder()
            return handler.stream(
                TEXT_STREAM_HEADERS, (text_encoder.feed(c) for c in _script(prompt, messages, number))
            )
        live = LiveReply(message_id)
        chat.live = live
        encoder = UiStreamEncoder(message_id, metadata={"conversationId": conversation})
        handler.stream(UI_STREAM_HEADERS, self._produce(encoder, live, _script(prompt, messages, number)))

    def _produce(self, encoder: UiStreamEncoder, live: LiveReply, chunks: Iterator[dict[str, Any]]) -> Iterator[bytes]:
        """The upstream loop: encode each chunk; a stop request ends it (a disconnect does not)."""
        yield encoder.start()
        for chunk in chunks:
            if live.stop_requested:
                with live.changed:
                    live.stopped = live.done = True
                    live.changed.notify_all()
                yield encoder.stop()
                return
            if chunk.get("fail"):
                with live.changed:
                    live.done = True
                    live.changed.notify_all()
                yield encoder.fail(str(chunk["fail"]))
                return
            out = encoder.feed(chunk)
            with live.changed:
                live.text = encoder.text
                live.changed.notify_all()
            yield out
        with live.changed:
            live.done = True
            live.changed.notify_all()
        yield encoder.finish()

    def resume(self, handler: _Quiet, chat_id: str) -> None:
        """GET /v1/chat/{id}/stream: replay the checkpointed text of the reply in progress, then follow it; else 204."""
        live = self.chat(chat_id).live
        self.resume_requests.append((chat_id, len(live.text) if live else -1))
        if live is None or live.done:
            return handler.empty(204)

        def follow() -> Iterator[bytes]:
            with live.changed:
                sent = live.text
            encoder, head = UiStreamEncoder.resume(live.message_id, sent, metadata={"resumed": True})
            yield head
            while True:
                with live.changed:
                    live.changed.wait_for(lambda seen=sent: live.text != seen or live.done, timeout=10)
                    new, done, stopped = live.text[len(sent) :], live.done, live.stopped
                    sent = live.text
                yield encoder.text_delta(new)
                if done:
                    yield encoder.stop() if stopped else encoder.finish()
                    return

        handler.stream(UI_STREAM_HEADERS, follow())


def _script(prompt: str, messages: list[dict[str, Any]], number: int) -> Iterator[dict[str, Any]]:
    """The scripted upstream: OpenAI chunks for what the user asked (and for a tool result, the follow-up)."""
    tool_results = [m for m in messages if m.get("role") == "tool"]
    if tool_results and messages[-1].get("role") == "tool":
        city = json.loads(tool_results[-1]["content"])["city"]
        yield _chunk(role="assistant", content="")
        for piece in ("You are ", "in ", f"{city}."):
            yield _chunk(content=piece)
        yield _finish("stop")
        yield USAGE
        return
    if prompt.startswith("slow"):
        for i in range(SLOW_WORDS):
            time.sleep(SLOW_DELAY)
            yield _chunk(content=f"word{i} ")
        yield _finish("stop")
        return
    if prompt.startswith("fail"):
        yield _chunk(content="Partial answer ")
        yield {"fail": "upstream_error: The provider failed mid-answer."}
        return
    if prompt.startswith("weather"):
        call = {
            "index": 0,
            "id": f"call_{number}",
            "type": "function",
            "function": {"name": "getLocation", "arguments": ""},
        }
        yield _chunk(role="assistant", content=None, tool_calls=[call])
        yield _chunk(tool_calls=[{"index": 0, "function": {"arguments": "{}"}}])
        yield _finish("tool_calls")
        yield USAGE
        return
    yield _chunk(role="assistant", content="")
    for piece in (f"Echo #{number}", ": ", prompt):
        time.sleep(0.02)
        yield _chunk(content=piece)
    yield _finish("stop")
    yield USAGE


def _once(data: bytes) -> Iterator[bytes]:
    yield data


def _probe_name(path: str) -> str:
    parts = urlsplit(path).path.strip("/").split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "probe" else urlsplit(path).path


class _Quiet(BaseHTTPRequestHandler):
    """HTTP/1.0 handler: streamed bodies end when the connection closes; no log noise."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        if hasattr(self, "cors"):
            self.cors()
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def empty(self, status: int) -> None:
        self.send_response(status)
        if hasattr(self, "cors"):
            self.cors()
        self.end_headers()

    def error(self, status: int, code: str, message: str) -> None:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        self.reply(status, json.dumps(body).encode())

    def stream(self, headers: Any, chunks: Iterator[bytes]) -> None:
        """Write each piece as it is produced; after a client disconnect keep producing (a disconnect is not a stop)."""
        self.send_response(200)
        if hasattr(self, "cors"):
            self.cors()
        for name, value in dict(headers).items():
            self.send_header(name, value)
        self.end_headers()
        connected = True
        for piece in chunks:
            if not connected or not piece:
                continue
            try:
                self.wfile.write(piece)
                self.wfile.flush()
            except OSError:
                connected = False
