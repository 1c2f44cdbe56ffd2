"""The Lambda context object handed to handlers."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class LambdaContext:
    """Per-invocation context, with the same attribute names as awslambdaric's."""

    aws_request_id: str
    invoked_function_arn: str
    deadline_ms: int
    trace_id: str | None = None
    client_context: Any = None
    identity: Any = None
    tenant_id: str | None = None
    function_name: str = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
    function_version: str = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    memory_limit_in_mb: str = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    log_group_name: str = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
    log_stream_name: str = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function times out (never negative)."""
        return max(self.deadline_ms - int(time.time() * 1000), 0)
