"""A Function URL that records CORS preflights, for the one thing the real stack cannot tell a test: which request
headers each AI SDK transport and openai-node helper asks a browser to allow (Access-Control-Request-Headers).

The page's origin serves the probe bundle; the API origin (another port) records each preflight and answers each probe
with a minimal valid response (a UI message stream, plain text, OpenAI SSE or JSON). Real sockets, real CORS.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stream_app.chat.ui_stream import TEXT_STREAM_HEADERS, UI_STREAM_HEADERS, UiStreamEncoder
from tests.usechat import recorded_chunks


class FakeGateway:
    """Both origins, and the preflights recorded per probe."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist
        self.lock = threading.Lock()
        self.preflights: dict[str, set[str]] = {}
        self.probe_requests: dict[str, set[str]] = {}
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

    def _page_handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Page(_Quiet):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/probe.html":
                    html = b'<!doctype html><meta charset="utf-8"><script type="module" src="/probe.js"></script>'
                    return self.reply(200, html, "text/html")
                if path == "/probe.js":
                    return self.reply(200, (gateway.dist / "probe.js").read_bytes(), "text/javascript")
                return self.reply(404, b"not found", "text/plain")

        return Page

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
                if urlsplit(self.path).path.startswith("/probe/"):
                    gateway.record_probe(self)
                    return self.empty(204)
                return self.error(404, "not_found", "No such route.")

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if url.path.startswith("/probe/"):
                    gateway.record_probe(self)
                    return gateway.probe(self, url.path, json.loads(body or b"{}"))
                return self.error(404, "not_found", "No such route.")

        return Api

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
