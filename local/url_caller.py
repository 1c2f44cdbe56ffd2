"""Call the Stream function through its URL (for `make event`'s set-up turns)."""

from __future__ import annotations

import urllib.error
import urllib.request

from local.event_prep import Caller
from local.running_stack import NoLocalStackError


def url_caller(stream_url: str) -> Caller:
    """A Caller that sends (method, path, query, body) to the Stream function URL and returns the status."""
    base = stream_url.rstrip("/")

    def call(method: str, path: str, query: str, body: bytes) -> int:
        request = urllib.request.Request(  # noqa: S310 - the local stack's loopback URL
            f"{base}{path}?{query}", data=body or None, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310  # nosec B310 - loopback
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as err:
            err.read()
            return int(err.code)
        except urllib.error.URLError as err:
            raise NoLocalStackError(
                f"the Stream URL {base}/ does not answer ({err.reason}); restart `make dev`"
            ) from None

    return call
