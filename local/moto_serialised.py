"""moto server with DynamoDB requests taken one at a time.

Real DynamoDB makes conditional writes and transactions atomic; moto's DynamoDB backend is not
thread-safe, so under concurrent turns two conditional transactions could both pass (a lost turn that
DynamoDB would never allow). Serialising DynamoDB calls gives the local stack DynamoDB's semantics;
every other service stays concurrent. Run as `python -m local.moto_serialised HOST PORT`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialise_dynamodb(app: App) -> App:
    """WSGI middleware: one DynamoDB request at a time (the response is produced inside the lock)."""
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def exit_with_parent(interval: float = 0.5) -> None:
    """Stop when the stack that started us is gone, even if it was killed (it runs us in our own session)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    """Serve moto on HOST PORT."""
    host, port = sys.argv[1], int(sys.argv[2])
    exit_with_parent()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialise_dynamodb(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
