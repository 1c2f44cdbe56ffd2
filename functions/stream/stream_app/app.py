"""Routing and signature checks for the Stream function."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sigstream.adapters.aws_client import DYNAMODB, SECRETS_MANAGER, client_from_environment
from sigstream.adapters.aws_credentials import credentials_from_environment
from sigstream.adapters.secret_cache import SecretCache
from sigstream.adapters.thread_pool import ProcessThreadPool
from sigstream.core.errors import MethodNotAllowedError, NotFoundError, SigstreamError
from sigstream.core.routes import match_route
from sigstream.core.settings import StreamSettings, parse_signing_keys, parse_sw1_apps
from sigstream.core.signed_url import verify_query
from sigstream.core.sw1 import is_sw1_query
from stream_app import conversations
from stream_app.adapters.history_store import HistoryStore
from stream_app.adapters.upstream_client import UpstreamClient
from stream_app.chat_turn import ChatDeps, chat_turn
from stream_app.http_io import HttpResult, Request, error_result, parse_event
from stream_app.observability import logger, record
from stream_app.sw1_proxy import sw1_proxy


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
        self.chat = ChatDeps(
            settings, store, upstream, lambda: secrets.get(settings.provider_key_secret).strip(), clock, self.pool
        )

    def handle(self, event: Any) -> HttpResult:
        """One request, to a result; every failure becomes an OpenAI-shaped JSON error."""
        try:
            request = parse_event(event, self.settings.max_body_bytes)
            logger.append_keys(request_id=request.request_id)
            return self._route(request)
        except SigstreamError as error:
            record("ClientErrors" if error.status < 500 else "ServerErrors", 1, code=error.code)
            logger.info("request refused", extra={"status": error.status, "code": error.code, "param": error.param})
            return error_result(error)
        except Exception:
            logger.exception("unexpected failure")
            record("ServerErrors", 1, code="internal_error")
            return error_result(SigstreamError())

    def _route(self, request: Request) -> HttpResult:
        if request.path == "/" and is_sw1_query(request.raw_query):
            return self._sw1(request)
        route = match_route(request.path)
        if route is None:
            raise NotFoundError(f"no route for {request.path[:100]}", param="path")
        if request.method != route.method:
            raise MethodNotAllowedError(f"{request.method} is not allowed on this path", param="method")
        keys = parse_signing_keys(self.secrets.get(self.settings.signing_keys_secret)).keys
        grant = verify_query(
            method=request.method,
            path=request.path,
            raw_query=request.raw_query,
            keys=keys,
            now=self.clock(),
            max_lifetime=self.settings.max_url_lifetime,
            skew=self.settings.url_clock_skew_seconds,
        )
        logger.append_keys(subject=grant.subject, conversation_id=grant.conversation_id)
        if route.name == "chat":
            return chat_turn(request, grant, self.chat)
        if route.name == "list_conversations":
            return conversations.list_conversations(request, grant, self.store)
        if route.name == "list_messages":
            return conversations.list_messages(request, grant, self.store, route.conversation_id or "")
        return conversations.delete_conversation(grant, self.store, route.conversation_id or "")

    def _sw1(self, request: Request) -> HttpResult:
        apps = parse_sw1_apps(self.secrets.get(self.settings.sw1_apps_secret)) if self.settings.sw1_apps_secret else {}
        return sw1_proxy(
            request,
            apps,
            now=self.clock(),
            max_body=self.settings.max_body_bytes,
            timeout=self.settings.upstream_timeout_seconds,
            connect_timeout=self.settings.upstream_connect_timeout_seconds,
            upstream=self.upstream,
        )


def build_app(env: Mapping[str, str], clock: Callable[[], float]) -> StreamApp:
    """Wire settings and adapters from the environment (no network calls)."""
    settings = StreamSettings.from_env(env)
    credentials = credentials_from_environment(env)  # one provider: one container-endpoint fetch, not two
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
