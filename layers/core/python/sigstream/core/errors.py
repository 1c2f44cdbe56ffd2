"""One error hierarchy: each error carries an HTTP status, a code and a message safe to show."""

from __future__ import annotations

from typing import Any


class SigstreamError(Exception):
    """Root of every error the gateway reports to a client."""

    status = 500
    code = "internal_error"
    error_type = "server_error"

    def __init__(self, message: str = "internal error", *, param: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.detail = detail  # the cause, for the log only: never part of the response

    def cause(self) -> str | None:
        """What went wrong behind the public message (`detail`, else the chained exception), for logs."""
        if self.detail:
            return self.detail
        chained = self.__cause__
        return f"{type(chained).__name__}: {chained}" if chained is not None else None

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. Retry-After)."""
        return {}

    def body(self) -> dict[str, Any]:
        """The OpenAI error shape: {"error": {"message", "type", "param", "code"}}."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class BadRequestError(SigstreamError):
    """Malformed input; the message names the bad parameter."""

    status, code, error_type = 400, "invalid_request", "invalid_request_error"


class InvalidSignatureError(SigstreamError):
    """Any signature mismatch; deliberately never says which check failed."""

    status, code, error_type = 403, "invalid_signature", "authentication_error"

    def __init__(self) -> None:
        super().__init__("The URL signature is not valid.")


class ExpiredError(SigstreamError):
    """The signed URL is past its expiry (or not yet valid)."""

    status, code, error_type = 403, "expired", "authentication_error"

    def __init__(self) -> None:
        super().__init__("The signed URL has expired.")


class AlreadyUsedError(SigstreamError):
    """A single-use URL was presented a second time."""

    status, code, error_type = 403, "already_used", "authentication_error"

    def __init__(self) -> None:
        super().__init__("This single-use URL has already been used.")


class PolicyViolationError(SigstreamError):
    """The request exceeds what the signed URL allows (model, max_tokens)."""

    status, code, error_type = 403, "policy_violation", "permission_error"


class NotFoundError(SigstreamError):
    """No such route or conversation."""

    status, code, error_type = 404, "not_found", "invalid_request_error"


class MethodNotAllowedError(SigstreamError):
    """The route exists but not for this method."""

    status, code, error_type = 405, "method_not_allowed", "invalid_request_error"


class ConflictError(SigstreamError):
    """A concurrent turn is already writing to this conversation."""

    status, code, error_type = 409, "conversation_busy", "invalid_request_error"

    def headers(self) -> dict[str, str]:
        """A turn in flight ends soon: clients may retry shortly."""
        return {"retry-after": "1"}


class HistoryConflictError(SigstreamError):
    """A request's messages are neither new messages, the stored history resent, nor a regenerate of its last reply."""

    status, code, error_type = 409, "history_conflict", "invalid_request_error"


class PayloadTooLargeError(SigstreamError):
    """The request body exceeds the configured limit."""

    status, code, error_type = 413, "payload_too_large", "invalid_request_error"


class UnsupportedMediaTypeError(SigstreamError):
    """The body is not JSON."""

    status, code, error_type = 415, "unsupported_media_type", "invalid_request_error"


class RateLimitedError(SigstreamError):
    """Too many requests; says when to retry."""

    status, code, error_type = 429, "rate_limited", "rate_limit_error"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(int(retry_after), 1)

    def headers(self) -> dict[str, str]:
        """Retry-After in seconds."""
        return {"retry-after": str(self.retry_after)}


class UpstreamError(SigstreamError):
    """The provider failed or refused."""

    status, code, error_type = 502, "upstream_error", "server_error"


class UpstreamTimeoutError(SigstreamError):
    """The provider did not answer in time."""

    status, code, error_type = 504, "upstream_timeout", "server_error"


class ServiceUnavailableError(SigstreamError):
    """A dependency (DynamoDB, Secrets Manager) is unavailable; safe to retry."""

    status, code, error_type = 503, "service_unavailable", "server_error"

    def headers(self) -> dict[str, str]:
        """Clients may retry shortly."""
        return {"retry-after": "1"}
