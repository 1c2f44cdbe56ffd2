"""A threading HTTP server that does not print tracebacks for clients that hang up."""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any


class QuietThreadingHTTPServer(ThreadingHTTPServer):
    """Dropped connections are normal here (cut streams, killed environments)."""

    daemon_threads = True

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Serve until shutdown(); a short poll keeps shutdown() (and so Ctrl-C) quick."""
        super().serve_forever(poll_interval)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore connection resets; report anything else."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)
