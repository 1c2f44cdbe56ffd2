"""Serves web/ (the chat page) and its demo backend route, POST /api/sign, on a loopback port."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from local.demo_backend import DemoBackend
from local.quiet_server import QuietThreadingHTTPServer

COOKIE = "sigstream_demo_user"


class _WebHandler(SimpleHTTPRequestHandler):
    server: WebServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def end_headers(self) -> None:
        # The page must never be cached stale during development, and never framed.
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", self.server.csp)
        super().end_headers()

    def _subject(self) -> tuple[str, bool]:
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value.startswith("demo-") and value[5:].isalnum():
                return value, False
        return DemoBackend.new_user(), True

    def do_POST(self) -> None:
        if self.path != "/api/sign":
            self.send_error(404)
            return
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            request = None
        subject, new = self._subject()
        answer: dict[str, Any]
        if not isinstance(request, dict):
            status, answer = 400, {"error": {"message": "body must be a JSON object", "code": "invalid_request"}}
        else:
            status, answer = self.server.backend().sign(subject, request)
            if status == 200 and self.server.embedded_upstream:
                answer["embedded_upstream"] = True  # the page says its answers are the echo provider's
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if new:
            self.send_header("Set-Cookie", f"{COOKIE}={subject}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000")
        self.end_headers()
        self.wfile.write(body)


class WebServer(QuietThreadingHTTPServer):
    """The chat page plus its backend."""

    def __init__(self, web_dir: Path, stack: Any, port: int = 0) -> None:
        handler = functools.partial(_WebHandler, directory=str(web_dir))
        super().__init__(("127.0.0.1", port), handler)
        self.stack = stack
        stream = stack.endpoints().get("stream_url", "").rstrip("/")
        # Scripts only from the page itself; fetches only to itself and the Stream function.
        self.csp = f"default-src 'self'; connect-src 'self' {stream}; img-src 'self' data:; style-src 'self'"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def embedded_upstream(self) -> bool:
        """Whether answers come from the stack's embedded echo provider (no UPSTREAM_BASE_URL)."""
        return getattr(self.stack, "upstream", None) is not None

    def backend(self) -> DemoBackend:
        """The Sign-function client, with the stack's current endpoints."""
        endpoints = self.stack.endpoints()
        return DemoBackend(
            endpoints["sign_url"],
            endpoints["aws_access_key_id"],
            endpoints["aws_secret_access_key"],
            endpoints["region"],
        )

    @property
    def url(self) -> str:
        """Where the page is served."""
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()
