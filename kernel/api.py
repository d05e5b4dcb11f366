"""DRF errors in the words of the wire contract: ``{code, message, details?}``."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from protocol.errors import DomainError, ErrorCode

DOMAIN_STATUS = {
    ErrorCode.INVALID_MESSAGE: status.HTTP_400_BAD_REQUEST,
    ErrorCode.UNAUTHORIZED: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.ENVIRONMENT_NOT_FOUND: status.HTTP_404_NOT_FOUND,
    ErrorCode.ENVIRONMENT_CLOSED: status.HTTP_409_CONFLICT,
    ErrorCode.RATE_LIMITED: status.HTTP_429_TOO_MANY_REQUESTS,
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Errors as ``{code, message, details?}``, the same words as the socket's ``ERROR``."""
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.details:
            body["details"] = exc.details
        return Response(body, status=DOMAIN_STATUS.get(exc.code, status.HTTP_400_BAD_REQUEST))
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        code = ErrorCode.INVALID_MESSAGE
        response.data = {"code": code, "message": "invalid request", "details": exc.detail}
    elif isinstance(exc, exceptions.Throttled):
        response.data = {
            "code": ErrorCode.RATE_LIMITED,
            "message": "too many requests",
            "details": {"retryAfterMs": int((getattr(exc, "wait", 0) or 0) * 1000)},
        }
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        response.data = {
            "code": ErrorCode.INVALID_MESSAGE,
            "message": "send the request body as JSON (Content-Type: application/json)",
        }
    elif isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response.data = {"code": ErrorCode.UNAUTHORIZED, "message": str(exc.detail)}
    return response
