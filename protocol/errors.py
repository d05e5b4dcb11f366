"""Error codes of the wire contract and the domain exception that carries them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_MESSAGE = "INVALID_MESSAGE"
    UNAUTHORIZED = "UNAUTHORIZED"
    ENVIRONMENT_NOT_FOUND = "ENVIRONMENT_NOT_FOUND"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    RATE_LIMITED = "RATE_LIMITED"
    ENVIRONMENT_CLOSED = "ENVIRONMENT_CLOSED"
    SLIPPAGE_EXCEEDED = "SLIPPAGE_EXCEEDED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class DomainError(Exception):
    """A refusal the client should see as an ``ERROR`` frame; nothing was changed."""

    def __init__(
        self, code: ErrorCode, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.request_id: str | None = None

    def with_request_id(self, request_id: str | None) -> DomainError:
        """Remember the request id of a message that failed before it was fully read."""
        self.request_id = request_id
        return self

    def __repr__(self) -> str:
        return f"DomainError({self.code}, {self.message!r})"
