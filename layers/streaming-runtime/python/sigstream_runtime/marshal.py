"""Turn events and buffered results into bytes the way awslambdaric does."""

from __future__ import annotations

import decimal
import json
import os
import traceback
from typing import Any

# awslambdaric keeps non-ASCII text as is on python3.12+ runtimes only.
_ENSURE_ASCII = os.environ.get("AWS_EXECUTION_ENV", "") not in {
    f"AWS_Lambda_python3.{minor}" for minor in range(12, 16)
}


def _default(obj: Any) -> Any:
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def decode_event(body: bytes, content_type: str) -> Any:
    """JSON events become Python objects; anything else is passed through as bytes."""
    if content_type.split(";")[0].strip() != "application/json":
        return body
    return json.loads(body)


def encode_result(result: Any) -> tuple[bytes, str]:
    """Buffered result as (body, content type): bytes as is, everything else as JSON."""
    if isinstance(result, bytes):
        return result, "application/unknown"
    text = json.dumps(result, default=_default, ensure_ascii=_ENSURE_ASCII, allow_nan=True)
    return text.encode("utf-8"), "application/json"


def error_payload(exc: BaseException, request_id: str = "") -> dict[str, Any]:
    """Awslambdaric's error shape: errorMessage, errorType, requestId, stackTrace."""
    frames = traceback.extract_tb(exc.__traceback__)
    trimmed = [f for f in frames if "/sigstream_runtime/" not in f.filename] or list(frames)
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(trimmed),
    }


def function_error_type(exc: BaseException, category: str = "Function") -> str:
    """Error-type header value in the `Function.Name` form the Runtime API accepts."""
    name = type(exc).__name__
    return f"{category}.{name}" if name[:1].isupper() and name.isalpha() else f"{category}.Unknown"
