"""Powertools Logger and Metrics, created once; no message text is logged unless configured."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="sigstream-stream")
metrics = Metrics(namespace="Sigstream", service="sigstream-stream")


def record(name: str, value: float, unit: str = "Count", **dimensions: Any) -> None:
    """Add a metric (flushed as EMF after each invocation)."""
    metrics.add_metric(name=name, unit=getattr(MetricUnit, unit), value=value)
    for key, dim in dimensions.items():
        metrics.add_metadata(key=key, value=dim)


def flush() -> None:
    """Write the invocation's metrics as one EMF log line."""
    metrics.flush_metrics()
