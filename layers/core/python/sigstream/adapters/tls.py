"""One TLS client context per process, made on first use and shared by every HTTPS connection.

Loading the CA bundle costs ~20 ms of CPU; `http.client.HTTPSConnection` without a context makes a new one
for every connection (a cold start opens three or four: Secrets Manager, DynamoDB per thread, the provider).
"""

from __future__ import annotations

import ssl

from sigstream.adapters.per_process import PerProcess

_context = PerProcess(ssl.create_default_context)


def client_context() -> ssl.SSLContext:
    """The process's verifying TLS client context (system CA bundle, hostname checks)."""
    return _context.get()
