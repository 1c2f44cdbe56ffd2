"""Routing and signature checks for the Stream function."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sigstream.adapters.aws_client import DYNAMODB, SECRETS_MANAGER, AwsServiceError, client_from_environment
from sigstream.adapters.aws_credentials import credentials_from_environment
from sigstream.adapters.secret_cache import SecretCache
from sigstream.adapters.thread_pool import DaemonThreads, ProcessThreadPool
from sigstream.core.errors import (
    InvalidSignatureError,
    MethodNotAllowedError,
    NotFoundError,
    ServiceUnavailableError,
    SigstreamError,
)
from sigstream.core.routes import match_route
from sigstream.core.settings import ConfigError, StreamSettings, parse_sw1_apps
from sigstream.core.signed_url import Grant, parse_query, verify_query
from sigstream.core.sw1 import is_sw1_query
from stream_app import observability
from stream_app.adapters.history_store import HistoryStore
from stream_app.adapters.upstream_client import UpstreamClient
from stream_app.chat_turn import ChatDeps, chat_turn
from stream_app.http_io import HttpResult, Request, error_result, parse_event
from stream_app.observability import logger
from stream_app.sw1_proxy import sw1_proxy

# Signing keys fetched again ahead of their TTL when a URL names a key id the cache does not hold.
KEY_REFETCH_SECONDS = 30.0


class StreamApp:
    """Everything wired once per cold start; handle() per request."""

    def __init__(
        self,
        settings: StreamSettings,
        secrets: SecretCache,
        store: HistoryStore,
        upstream: UpstreamClient,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.store = store
        self.upstream = upstream
        self.clock = clock
        self.pool = ProcessThreadPool(max_workers=4, thread_name_prefix="aws")  # threads start per worker
        # Each streaming conversation turn holds one for its whole stream; threads are reused across turns.
        self.watchers = DaemonThreads("turn-watch")
        key_secret = settings.provider_key_secret
        self.chat = ChatDeps(
            settings,
            store,
            upstream,
            lambda: secrets.get(key_secret).strip(),
            clock,
            self.pool,
            self.watchers,
            cached_provider_key=lambda: _stripped(secrets.cached(key_secret)),
        )

    def handle(self, event: Any, deadline: float | None = None, upstream_deadline: float | None = None) -> HttpResult:
        """One request, to a result; every failure becomes an OpenAI-shaped JSON error.

        `deadline` (epoch seconds) is when Lambda ends this invocation: a reply in progress never claims a
        lease beyond it. `upstream_deadline` (time.monotonic()) is when the provider must be let go, so the turn
        is still stored in time.
        """
        self.upstream.deadline = upstream_deadline
        logger.clear_state()  # keys appended for the previous invocation (its subject...) must not leak into this one
        observability.begin()
        try:
            request = parse_event(event, self.settings.max_body_bytes)
            logger.append_keys(request_id=request.request_id)
            observability.note(request_id=request.request_id, method=request.method)
            result = self._route(request, deadline)
        except SigstreamError as error:
            self._log_refusal(error)
            result = error_result(error)
        except ConfigError as exc:  # a malformed secret (e.g. the SW1 apps): a deployment fault
            self._log_refusal(ServiceUnavailableError("the service is misconfigured; try again later"), exc)
            result = error_result(ServiceUnavailableError("the service is misconfigured; try again later"))
        except AwsServiceError as exc:  # e.g. the table does not exist: a deployment fault, not the client's
            self._log_refusal(ServiceUnavailableError("history storage is temporarily unavailable"), exc)
            result = error_result(ServiceUnavailableError("history storage is temporarily unavailable"))
        except Exception as exc:
            logger.exception("unexpected failure", extra={"cause": observability.describe_cause(exc)})
            observability.note(code="internal_error")
            result = error_result(SigstreamError())
        observability.note(status=result.status)
        # Exposed to scripts by the URL's CORS: what a browser can quote when reporting a failure (as in our logs).
        request_id = _request_id(event)
        if request_id:
            result.headers.setdefault("x-request-id", request_id)
        return result

    def _log_refusal(self, error: SigstreamError, cause: BaseException | None = None) -> None:
        """4xx at INFO; a failing provider or dependency at WARNING/ERROR, with its cause (never in the body)."""
        observability.note(code=error.code)
        extra: dict[str, Any] = {"status": error.status, "code": error.code, "param": error.param}
        if error.status < 500:
            logger.info("request refused", extra=extra)
            return
        if error.code in observability.UPSTREAM_CODES:
            # A provider's message may quote request content: the chain is logged by type and status only.
            extra["cause"] = observability.describe_cause(error.__cause__)
            logger.warning("provider failed", extra=extra)  # theirs, not ours: alarmed on its rate
        else:  # our own dependency (secret, table, endpoint): name it, so a misconfiguration is obvious
            extra.update(self._cause(cause or error))
            logger.error("request failed", extra=extra)

    def _cause(self, error: BaseException) -> dict[str, Any]:
        """What broke and where, for the log: the cause chain and the endpoints in use."""
        return {
            "cause": error.cause() if isinstance(error, SigstreamError) else f"{type(error).__name__}: {error}",
            "table": self.settings.table,
            "dynamodb_endpoint": self.store.client.endpoint,
            "upstream_base_url": self.settings.upstream_base_url,
        }

    def _verify(self, request: Request, keys: Mapping[str, bytes]) -> Grant:
        return verify_query(
            method=request.method,
            path=request.path,
            raw_query=request.raw_query,
            keys=keys,
            now=self.clock(),
            max_lifetime=self.settings.max_url_lifetime,
            skew=self.settings.url_clock_skew_seconds,
        )

    def _route(self, request: Request, deadline: float | None = None) -> HttpResult:
        if request.path == "/" and is_sw1_query(request.raw_query):
            observability.note(route="sw1")
            return self._sw1(request)
        route = match_route(request.path)
        if route is not None:
            observability.note(route=route.name)
        if route is None:
            raise NotFoundError(f"no route for {request.path[:100]}", param="path")
        if request.method != route.method:
            raise MethodNotAllowedError(f"{request.method} is not allowed on this path", param="method")
        secret = self.settings.signing_keys_secret
        keys = self.secrets.signing_keys(secret).keys
        try:
            grant = self._verify(request, keys)
        except InvalidSignatureError:
            # A key id we do not hold may have just been made active: the Sign function's cache can refresh
            # before ours (docs/deploy.md rotates in one step). Fetch the keys again, at most once per interval
            # so that made-up key ids cannot each cost a Secrets Manager call.
            kid = _key_id(request.raw_query)
            if kid is None or kid in keys or not self.secrets.refresh(secret, KEY_REFETCH_SECONDS):
                raise
            grant = self._verify(request, self.secrets.signing_keys(secret).keys)
        logger.append_keys(subject=grant.subject, conversation_id=grant.conversation_id)
        if route.name == "chat":
            return chat_turn(request, grant, self.chat, deadline)  # consumes the nonce alongside its other checks
        if route.name == "ui_chat":
            from stream_app.ui_chat import ui_chat_turn  # ~5 ms of imports only the AI SDK's routes need

            return ui_chat_turn(request, grant, self.chat, deadline)  # the same turn, answered for the AI SDK
        if grant.nonce:  # single use means single use, on every route
            self.store.consume_nonce(grant.nonce, grant.expires + 60)
        from stream_app import conversations  # ~3 ms of imports a chat turn's cold start does without

        conversation_id = route.conversation_id or ""
        if route.name == "list_conversations":
            return conversations.list_conversations(request, grant, self.store)
        if route.name == "list_messages":
            return conversations.list_messages(request, grant, self.store, conversation_id, self.clock())
        if route.name == "stop_turn":
            return conversations.stop_turn(request, grant, self.store, conversation_id, self.clock)
        if route.name == "ui_resume_stream":
            from stream_app.ui_chat import ui_resume_stream

            return ui_resume_stream(request, grant, self.store, conversation_id, self.clock, deadline)
        if route.name == "resume_stream":
            return conversations.resume_stream(request, grant, self.store, conversation_id, self.clock, deadline)
        return conversations.delete_conversation(grant, self.store, conversation_id)

    def _sw1(self, request: Request) -> HttpResult:
        apps = parse_sw1_apps(self.secrets.get(self.settings.sw1_apps_secret)) if self.settings.sw1_apps_secret else {}
        return sw1_proxy(
            request,
            apps,
            self.store,
            now=self.clock(),
            max_lifetime=self.settings.max_url_lifetime,
            skew=self.settings.url_clock_skew_seconds,
            max_body=self.settings.max_body_bytes,
            timeout=self.settings.upstream_timeout_seconds,
            connect_timeout=self.settings.upstream_connect_timeout_seconds,
            upstream=self.upstream,
        )


def _key_id(raw_query: str) -> str | None:
    try:
        return parse_query(raw_query).get("kid")
    except SigstreamError:
        return None


def _stripped(value: str | None) -> str | None:
    return None if value is None else value.strip()


def _request_id(event: Any) -> str:
    """The Function URL's request id (also for events too malformed to parse), bounded and printable."""
    context = event.get("requestContext") if isinstance(event, dict) else None
    value = context.get("requestId") if isinstance(context, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 and value.isprintable() else ""


def build_app(env: Mapping[str, str], clock: Callable[[], float]) -> StreamApp:
    """Wire settings and adapters from the environment (no network calls); bad settings stop the start."""
    try:
        settings = StreamSettings.from_env(env)
        credentials = credentials_from_environment(env)  # one provider: one container-endpoint fetch, not two
    except ConfigError as exc:
        logger.error("configuration error: the Stream function cannot start", extra={"cause": str(exc)})
        raise
    secrets_client = client_from_environment(SECRETS_MANAGER, env, credentials)
    dynamo_client = client_from_environment(DYNAMODB, env, credentials)
    upstream = UpstreamClient(
        settings.upstream_base_url,
        timeout=settings.upstream_timeout_seconds,
        connect_timeout=settings.upstream_connect_timeout_seconds,
        max_retries=settings.upstream_max_retries,
    )
    return StreamApp(
        settings,
        SecretCache(secrets_client, settings.secret_ttl_seconds),
        HistoryStore(dynamo_client, settings.table, settings.retention_days),
        upstream,
        clock,
    )
