"""Powertools Logger and Metrics, created once; one access-log line and one metrics blob per request.

No message text, URL or query is ever logged: the access line carries only the fields of `Access`.
Powertools (about 20 ms of imports, a fifth of a cold start) is imported when the first line is logged or the
first metrics are flushed: a request that logs nothing before its first byte does not wait for it.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics

SERVICE = "sigstream-stream"
NAMESPACE = "Sigstream"
# Error codes that mean the provider failed (the ProviderErrors alarm counts these).
UPSTREAM_CODES = frozenset({"upstream_error", "upstream_timeout"})
# Metrics whose value also belongs on the access line.
_ACCESS_FIELDS = {"TimeToFirstToken": "ttft_ms", "TokensIn": "tokens_in", "TokensOut": "tokens_out"}
_URL = re.compile(r"\w+://\S+")

_MAKING = threading.RLock()  # RLock: a warning raised while Powertools loads logs through the same logger


class _LazyLogger:
    """Powertools' Logger, made on the first line logged.

    Appended keys are kept here and given to Powertools only when a line is logged: a request sets and clears
    its keys before its first byte, and most requests log their first line after it (the access line).
    """

    def __init__(self) -> None:
        self._logger: Logger | None = None
        self._keys: dict[str, Any] = {}
        self._synced = False  # whether the Logger's keys are ours

    def _get(self) -> Logger:
        with _MAKING:  # the watcher thread logs too: one Logger (two would each add a handler: lines twice)
            if self._logger is None:
                from aws_lambda_powertools import Logger

                self._logger = Logger(service=SERVICE)
            if not self._synced:
                self._logger.clear_state()
                self._logger.append_keys(**self._keys)
                self._synced = True
        return self._logger

    def append_keys(self, **keys: Any) -> None:
        """Keys on every later line (until removed)."""
        with _MAKING:
            self._keys.update(keys)
            self._synced = False

    def remove_keys(self, keys: list[str]) -> None:
        """Keys no longer logged."""
        with _MAKING:
            for key in keys:
                self._keys.pop(key, None)
            self._synced = False

    def clear_state(self) -> None:
        """Drop every appended key."""
        with _MAKING:
            self._keys.clear()
            self._synced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)  # info, warning, error, exception, ...


class _LazyMetrics:
    """Powertools' Metrics, made when the first metrics are flushed (after the response)."""

    def __init__(self) -> None:
        self._metrics: Metrics | None = None

    def get(self) -> Metrics:
        with _MAKING:
            if self._metrics is None:
                from aws_lambda_powertools import Metrics

                self._metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
        return self._metrics


logger = _LazyLogger()
metrics = _LazyMetrics()


def _warning_as_json(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Library warnings become JSON log lines (a bare `UserWarning:` line breaks log queries)."""
    logger.warning("python warning", extra={"category": category.__name__, "warning": str(message)[:300]})


warnings.showwarning = _warning_as_json


@dataclass
class Access:
    """What the access line says about one request (never content, URLs or keys)."""

    started: float = field(repr=False)
    request_id: str = ""
    method: str = ""
    route: str = "unknown"
    status: int = 0
    code: str | None = None
    outcome: str | None = None  # streams: complete / incomplete / stopped
    merge: str | None = None  # conversation turns: how the request's messages met the history
    model: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    details: list[tuple[str, float, str, dict[str, str]]] = field(default_factory=list, repr=False)
    values: list[tuple[str, float, str]] = field(default_factory=list, repr=False)  # flushed in one blob


_current = Access(started=time.perf_counter())


def begin() -> Access:
    """Start the record of a new request (a warm process must not carry the last one's keys)."""
    global _current
    _current = Access(started=time.perf_counter())
    logger.remove_keys(["request_id", "subject", "conversation_id"])
    return _current


def note(**fields: Any) -> None:
    """Set access-line fields of the current request (only those `Access` declares)."""
    for key, value in fields.items():
        if key not in Access.__dataclass_fields__ or key in ("started", "details", "values"):
            raise TypeError(f"not an access-log field: {key}")
        setattr(_current, key, value)


def record(name: str, value: float, unit: str = "Count", **dimensions: str) -> None:
    """Add a metric; keyword dimensions also emit it per route and those dimensions.

    A `code` or `kind` dimension is an error code: the access line reports it unless one is already set.
    """
    _current.values.append((name, value, unit))
    if name in _ACCESS_FIELDS:
        setattr(_current, _ACCESS_FIELDS[name], round(value, 1) if unit == "Milliseconds" else int(value))
    if dimensions:
        _current.details.append((name, value, unit, {k: str(v) for k, v in dimensions.items()}))
        code = dimensions.get("code") or dimensions.get("kind")
        if code and _current.code is None:
            _current.code = str(code)


def describe_cause(error: BaseException | None, depth: int = 3) -> str:
    """The exception chain behind an error, by type (and HTTP status), for logs; never a URL or a provider message."""
    parts: list[str] = []
    while error is not None and len(parts) < depth:
        status = getattr(error, "status_code", None)
        if status is not None:  # a provider's answer: its message may quote request content or a masked key
            parts.append(f"{type(error).__name__}(status={status})")
        else:
            first_line = (str(error).splitlines() or [""])[0]
            parts.append(f"{type(error).__name__}: {_URL.sub('<url>', first_line)[:160]}".rstrip(": "))
        error = error.__cause__ or error.__context__
    return " <- ".join(parts)


def flush() -> None:
    """Finish the current request: its access line, then its metrics (per service and per route).

    `ServerErrors`, `ClientErrors` and `ProviderErrors` are 0 or 1 on every request, so their Average is a rate.
    Each error is also counted as `Errors` per route and code (a separate, smaller blob).
    """
    access = _current
    access.latency_ms = round((time.perf_counter() - access.started) * 1000, 1)
    line = {k: v for k, v in asdict(access).items() if k not in ("started", "details", "values") and v is not None}
    failed = access.status >= 500 or access.outcome == "incomplete"
    (logger.warning if failed else logger.info)("access", extra=line)
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    blob = metrics.get()
    for name, value, unit in access.values:
        blob.add_metric(name=name, unit=getattr(MetricUnit, unit), value=value)
    blob.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    blob.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=access.latency_ms)
    blob.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=int(access.status >= 500))
    blob.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=int(400 <= access.status < 500))
    blob.add_metric(name="ProviderErrors", unit=MetricUnit.Count, value=int(access.code in UPSTREAM_CODES))
    blob.add_dimensions(service=SERVICE, route=access.route)
    blob.flush_metrics()
    details = list(access.details)
    if access.code:
        details.append(("Errors", 1, "Count", {"code": access.code}))
    for name, value, unit, dims in details:
        with single_metric(
            name=name,
            unit=getattr(MetricUnit, unit),
            value=value,
            namespace=NAMESPACE,
            default_dimensions={"service": SERVICE, "route": access.route, **dims},
        ):
            pass
