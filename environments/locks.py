"""Row locks for money movements, always taken in the same order: environment, then position.

Every write that touches an environment's curve or a participant's balance goes through these
helpers inside ``transaction.atomic``; a fixed order means two transactions can never hold one
lock each while waiting for the other's.
"""

from __future__ import annotations

from environments.models import Environment, Position
from protocol.errors import DomainError, ErrorCode


def lock_environment(environment_id: str) -> Environment:
    """Lock and read the environment row; ENVIRONMENT_NOT_FOUND if there is none."""
    try:
        # NO KEY UPDATE: trades still queue on the row, but inserts that merely reference it
        # (a new participant's position) do not wait for them.
        return Environment.objects.select_for_update(no_key=True).get(pk=environment_id)
    except Environment.DoesNotExist:
        raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found") from None


def lock_position(environment: Environment, wallet: str) -> Position:
    """Lock and read a wallet's position; call only while holding the environment's lock."""
    try:
        return Position.objects.select_for_update().get(environment=environment, wallet=wallet)
    except Position.DoesNotExist:
        raise DomainError(
            ErrorCode.UNAUTHORIZED, "join the environment before trading or chatting"
        ) from None
