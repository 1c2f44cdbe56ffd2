"""Sign function: POST /sign issues a pre-signed Stream URL (Function URL with AWS_IAM auth)."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Literal

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sigstream.adapters.aws_client import SECRETS_MANAGER, client_from_environment
from sigstream.adapters.secret_cache import SecretCache
from sigstream.core.errors import BadRequestError, NotFoundError, SigstreamError
from sigstream.core.settings import ConfigError, SignSettings
from sigstream.core.signed_url import CONVERSATION_PATTERN, MODEL_PATTERN, SUBJECT_PATTERN
from sigstream.core.url_issuer import SignSpec, issue_url, random_id

logger = Logger(service="sigstream-sign")
metrics = Metrics(namespace="Sigstream", service="sigstream-sign")
app = LambdaFunctionUrlResolver()


def _configure() -> tuple[SignSettings, SecretCache]:
    """Settings and the secret cache, as the Stream function has them; bad settings stop the start."""
    try:
        settings = SignSettings.from_env(os.environ)
    except ConfigError as exc:
        # Issuing relative or unverifiable URLs would fail later in a browser; failing here says why.
        logger.error("configuration error: the Sign function cannot start", extra={"cause": str(exc)})
        raise
    return settings, SecretCache(client_from_environment(SECRETS_MANAGER, os.environ), settings.secret_ttl_seconds)


SETTINGS, SECRETS = _configure()


class SignRequest(BaseModel):
    """POST /sign body; unknown fields are refused so typos do not silently sign a wider URL."""

    model_config = ConfigDict(extra="forbid", strict=True)

    subject: str = Field(pattern=SUBJECT_PATTERN.pattern)
    method: Literal["GET", "POST", "DELETE"] = "POST"
    path: str = Field(default="/v1/chat/completions", max_length=200)
    conversation_id: str | None = Field(default=None, pattern=CONVERSATION_PATTERN.pattern)
    stateless: bool = False
    expires_in: int = Field(default=300, ge=1)
    single_use: bool = False
    model: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    body_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    n: int | None = Field(default=None, ge=1, le=16)  # choices per chat request (absent: 1)

    @field_validator("model")
    @classmethod
    def _models(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = [value] if isinstance(value, str) else value or []
        if value == []:  # an empty allow-list must not sign a URL for every model
            raise ValueError("model must name at least one model (omit it to allow the deployment's models)")
        if len(names) > 16 or not all(MODEL_PATTERN.fullmatch(n) for n in names):
            raise ValueError("model must be a model name or a list of up to 16")
        return value


def _error(error: SigstreamError) -> Response[Any]:
    return Response(
        status_code=error.status, content_type="application/json", body=error.body(), headers=error.headers()
    )


@app.exception_handler(ValidationError)  # type: ignore[untyped-decorator]  # Powertools' decorator is untyped
def _invalid(exc: ValidationError) -> Response[Any]:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return _error(BadRequestError(f"{field}: {first['msg']}", param=field))


@app.exception_handler(SigstreamError)  # type: ignore[untyped-decorator]
def _refused(exc: SigstreamError) -> Response[Any]:
    if exc.status >= 500:  # the client sees only the public message; the log says what broke
        logger.error("request failed", extra={"status": exc.status, "code": exc.code, "cause": exc.cause()})
    return _error(exc)


@app.not_found
def _not_found(_: Exception) -> Response[Any]:
    return _error(NotFoundError("no such route; use POST /sign", param="path"))


@app.post("/sign")
def sign() -> Response[Any]:
    """Validate, sign, and return the URL (never logged: it is a bearer credential)."""
    try:
        body = app.current_event.json_body
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise BadRequestError("body must be JSON (nested at most a few hundred levels)", param="body") from exc
    if not isinstance(body, dict):
        raise BadRequestError("body must be a JSON object", param="body")
    request = SignRequest.model_validate(body)
    keys = SECRETS.signing_keys(SETTINGS.signing_keys_secret)
    models = (request.model,) if isinstance(request.model, str) else tuple(request.model or ())
    if forbidden := SETTINGS.forbidden_models(models):
        # A URL for a model the Stream function refuses would fail later, in a browser, far from the cause.
        raise BadRequestError(
            f"model {forbidden[0]} is not allowed by this deployment (see its AllowedModels parameter)", param="model"
        )
    spec = SignSpec(
        subject=request.subject,
        method=request.method,
        path=request.path,
        conversation_id=request.conversation_id,
        stateless=request.stateless,
        expires_in=request.expires_in,
        single_use=request.single_use,
        models=models,
        max_tokens=request.max_tokens,
        body_sha256=request.body_sha256,
        n=request.n,
    )
    doc = issue_url(
        spec,
        keys,
        SETTINGS.stream_url,
        now=int(time.time()),
        max_lifetime=SETTINGS.max_url_lifetime,
        new_id=random_id,
    )
    metrics.add_metric(name="UrlsIssued", unit=MetricUnit.Count, value=1)
    logger.info(
        "url issued",
        extra={
            "subject": request.subject,
            "path": request.path,
            "conversation_id": doc["conversation_id"],
            "kid": keys.active,
        },
    )
    return Response(status_code=200, content_type="application/json", body=doc)


def _error_code(response: dict[str, Any]) -> str:
    """The `error.code` of an error response (ours are OpenAI-shaped JSON)."""
    try:
        code = json.loads(response.get("body") or "{}")["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "unknown"
    return code if isinstance(code, str) and code.isidentifier() else "unknown"


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda handler: one access line and one metrics blob per request (0/1 error counters make rates)."""
    started = time.perf_counter()
    response = app.resolve(event, context)
    status = int(response.get("statusCode") or 0)
    http = (event.get("requestContext") or {}).get("http") or {}
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=int(status >= 500))
    metrics.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=int(400 <= status < 500))
    route = "sign" if event.get("rawPath") == "/sign" else "unknown"
    code = _error_code(response) if status >= 400 else None
    if code:  # per route and error code, like the Stream function's `Errors`
        with single_metric(
            name="Errors",
            unit=MetricUnit.Count,
            value=1,
            namespace="Sigstream",
            default_dimensions={"service": "sigstream-sign", "route": route, "code": code},
        ):
            pass
    access = {
        "route": route,
        "code": code,
        "method": str(http.get("method", "")),
        "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "request_id": str((event.get("requestContext") or {}).get("requestId", "")),
    }
    (logger.warning if status >= 500 else logger.info)("access", extra=access)
    return response
