"""SW1 mode: a verified Signway URL forwards the body to the allowlisted upstream, bytes back unchanged."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sigstream.core.errors import SigstreamError, UpstreamError
from sigstream.core.sw1 import Sw1App, verify_sw1
from stream_app.adapters.upstream_client import UpstreamClient
from stream_app.http_io import HttpResult, Request

# Only these client headers travel upstream (Signway forwards all of them, cookies included).
FORWARDED = ("content-type", "accept", "openai-organization", "openai-project")
RETURNED = ("content-type", "cache-control", "x-request-id", "openai-processing-ms")


def _normalise(url: str) -> str:
    import ada_url

    try:
        return str(ada_url.URL(url).href)
    except ValueError:
        raise
    except Exception as exc:  # ada raises its own types for unparsable input
        raise ValueError("unparsable URL") from exc


def sw1_proxy(
    request: Request,
    apps: Mapping[str, Sw1App],
    *,
    now: float,
    max_body: int,
    timeout: float,
    connect_timeout: float,
    upstream: UpstreamClient,
) -> HttpResult:
    """Verify, then stream the upstream response back as it arrives."""
    grant, _ = verify_sw1(
        method=request.method,
        raw_query=request.raw_query,
        headers=list(request.headers.items()),
        read_body=lambda limit: request.body[: limit + 1],
        apps=apps,
        normalise_url=_normalise,
        now=now,
        max_body=max_body,
    )
    headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
    headers.update({k.lower(): v for k, v in grant.app.headers.items()})  # app headers win, as in Signway
    response = upstream.forward(request.method, grant.proxy_url, request.body, headers)  # streamed, not retried
    kept = {k: v for k, v in response.headers.items() if k.lower() in RETURNED}

    def body() -> Iterator[bytes]:
        try:
            yield from response.chunks()
        except SigstreamError as exc:  # cut stream: nothing to add in a raw pass-through; the client sees the cut
            raise UpstreamError("the upstream stream failed") from exc
        finally:
            response.close()

    return HttpResult(response.status, kept, body())
