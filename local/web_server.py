"""Serves web/ (the chat page) on its own loopback port."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from local.quiet_server import QuietThreadingHTTPServer


class _QuietStaticHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class WebServer(QuietThreadingHTTPServer):
    """Static files of the chat page."""

    daemon_threads = True

    def __init__(self, web_dir: Path, stack: Any, port: int = 0) -> None:
        handler = functools.partial(_QuietStaticHandler, directory=str(web_dir))
        super().__init__(("127.0.0.1", port), handler)
        self.stack = stack
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """Where the page is served."""
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()
