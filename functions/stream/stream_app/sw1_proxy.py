"""SW1 mode: a verified Signway URL forwards the body to the allowlisted upstream, bytes back unchanged."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sigstream.core.errors import SigstreamError, UpstreamError
from sigstream.core.sw1 import Sw1App, verify_sw1
from stream_app.adapters.history_store import HistoryStore, sw1_app_limit_key, sw1_url_limit_key
from stream_app.adapters.upstream_client import UpstreamClient
from stream_app.chat.request import police_unsigned_body
from stream_app.http_io import HttpResult, Request

# Only these client headers travel upstream (Signway forwards all of them, cookies included). Never the
# client's openai-organization / openai-project: with our key they would bill another org or project.
FORWARDED = ("content-type", "accept")
# content-encoding: the bytes are relayed as sent; a provider that compressed them anyway must say so to the client.
RETURNED = ("content-type", "content-encoding", "cache-control", "x-request-id", "openai-processing-ms")


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
    store: HistoryStore,
    *,
    now: float,
    max_lifetime: int,
    skew: int,
    max_body: int,
    timeout: float,
    connect_timeout: float,
    upstream: UpstreamClient,
) -> HttpResult:
    """Verify, rate-limit, police an unsigned body, then stream the upstream response back as it arrives."""
    grant, _ = verify_sw1(
        method=request.method,
        raw_query=request.raw_query,
        headers=list(request.headers.items()),
        read_body=lambda limit: request.body[: limit + 1],
        apps=apps,
        normalise_url=_normalise,
        now=now,
        max_body=max_body,
        max_lifetime=max_lifetime,
        skew=skew,
    )
    app = grant.app
    store.reserve(sw1_app_limit_key(app.id), now, app.rate_limit_per_minute, 0, 0)
    store.reserve(sw1_url_limit_key(grant.signature), now, app.url_rate_limit_per_minute, 0, 0)
    forwarded = request.body
    if not grant.body_signed and (app.models or app.max_tokens is not None):
        content_type = request.headers.get("content-type", "")
        forwarded = police_unsigned_body(forwarded, content_type, app.models, app.max_tokens, app.parameters)
    headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
    headers.update({k.lower(): v for k, v in grant.app.headers.items()})  # app headers win, as in Signway
    response = upstream.forward(request.method, grant.proxy_url, forwarded, headers)  # streamed, not retried
    kept = {k: v for k, v in response.headers.items() if k.lower() in RETURNED}

    def body() -> Iterator[bytes]:
        try:
            yield from response.chunks()
        except SigstreamError as exc:  # cut stream: nothing to add in a raw pass-through; the client sees the cut
            raise UpstreamError("the upstream stream failed") from exc
        finally:
            response.close()

    return HttpResult(response.status, kept, body())
