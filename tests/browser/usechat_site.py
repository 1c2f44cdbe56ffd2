"""The useChat example's own origin for browser tests against the real local stack (`make dev`).

It plays the app a developer builds: serves web/examples/usechat/dist, and its backend asks the Sign function (SigV4,
as a real backend does) for a fresh signed URL per request: `POST /backend/signed-url {purpose, chatId}` → `{url}`.
The Function URL it signs for is the stack's, on another origin, so every CORS preflight is the local front's.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROUTES = {
    "chat": ("POST", "/v1/chat"),
    "stream": ("GET", "/v1/chat/{id}/stream"),
    "stop": ("POST", "/v1/conversations/{id}/stop"),
    "messages": ("GET", "/v1/conversations/{id}/messages"),
}


class UseChatSite:
    """The page's origin and its signing backend, for one demo user."""

    def __init__(self, dist: Path, endpoints: dict[str, Any]) -> None:
        self.dist = dist
        self.endpoints = endpoints
        self.subject = "usechat-" + uuid.uuid4().hex[:10]
        self.expire_next = False
        self.issued: list[tuple[str, str]] = []  # (purpose, chat id) of every URL the page asked for
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        """POST /sign to the Sign function's IAM URL for this site's user."""
        body = json.dumps({"subject": self.subject, **doc}).encode()
        request = AWSRequest(
            "POST", self.endpoints["sign_url"] + "sign", data=body, headers={"content-type": "application/json"}
        )
        credentials = Credentials(self.endpoints["aws_access_key_id"], self.endpoints["aws_secret_access_key"])
        SigV4Auth(credentials, "lambda", self.endpoints["region"]).add_auth(request)
        http = urllib.request.Request(request.url, data=body, headers=dict(request.headers.items()), method="POST")
        with urllib.request.urlopen(http, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def new_chat(self) -> str:
        """A conversation id issued by the Sign function (as the app's backend gets one for a new chat)."""
        return str(self.sign({"method": "POST", "path": "/v1/chat"})["conversation_id"])

    def url(self, purpose: str, chat_id: str, **extra: Any) -> str:
        method, path = ROUTES[purpose]
        doc: dict[str, Any] = {"method": method, "path": path.replace("{id}", chat_id), **extra}
        if purpose == "chat":
            doc["conversation_id"] = chat_id
        return str(self.sign(doc)["url"])

    def stored(self, chat_id: str, include_superseded: bool = False) -> list[dict[str, Any]]:
        """GET /v1/conversations/{id}/messages, as the stack stores them."""
        url = self.url("messages", chat_id) + "&limit=100" + ("&include=superseded" if include_superseded else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                data: list[dict[str, Any]] = json.loads(response.read())["data"]
                return data
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return []
            raise

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Page(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                parts = path.strip("/").split("/")
                if path == "/probe.html":
                    html = b'<!doctype html><meta charset="utf-8"><script type="module" src="/probe.js"></script>'
                    return self.reply(200, html, "text/html")
                if path == "/probe.js":
                    return self.reply(200, (site.dist / "probe.js").read_bytes(), "text/javascript")
                if len(parts) >= 2 and parts[0] == "chat":
                    name = parts[2] if len(parts) > 2 else "index.html"
                    if name == "config.js":
                        config = {"backend": "/backend/signed-url", "chatId": parts[1]}
                        script = f"window.SIGSTREAM_USECHAT = {json.dumps(config)};".encode()
                        return self.reply(200, script, "text/javascript")
                    if name in ("index.html", "app.js"):
                        kind = "text/html" if name.endswith(".html") else "text/javascript"
                        return self.reply(200, (site.dist / name).read_bytes(), kind)
                return self.reply(404, b"not found", "text/plain")

            def do_POST(self) -> None:
                if urlsplit(self.path).path != "/backend/signed-url":
                    return self.reply(404, b"not found", "text/plain")
                doc = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                purpose, chat_id = doc.get("purpose"), doc.get("chatId")
                if purpose not in ROUTES or not isinstance(chat_id, str):
                    return self.reply(400, b'{"error": "purpose and chatId"}')
                site.issued.append((purpose, chat_id))
                if purpose == "chat" and site.expire_next:
                    site.expire_next = False
                    url = site.url(purpose, chat_id, expires_in=1)
                    time.sleep(1.6)  # the URL's window ends before the page uses it (the stack allows no skew)
                else:
                    url = site.url(purpose, chat_id)
                return self.reply(200, json.dumps({"url": url}).encode())

        return Page
