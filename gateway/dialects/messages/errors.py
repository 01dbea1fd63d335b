"""Anthropic's error shape and statuses for the gateway's failures."""

from __future__ import annotations

from typing import Any

_KIND_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_response(
    status: int, message: str, kind: str | None = None
) -> tuple[int, dict[str, Any]]:
    """(status, body) of an Anthropic error: ``{"type": "error", "error": {type, message}}``."""
    if kind is None:
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        kind = _KIND_BY_STATUS.get(status, fallback)
    return status, {"type": "error", "error": {"type": kind, "message": message}}


def error_for_failure(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """The Messages answer for a gateway failure answered ``status`` in the chat dialect.

    An all-503 chain is Anthropic's 529 ``overloaded_error`` (the SDK retries it); 402 is
    ``billing_error`` (the SDK's ``PaymentRequiredError``); other 5xx are ``api_error``.
    """
    if status == 503:
        return error_response(529, message, "overloaded_error")
    return error_response(status, message)
