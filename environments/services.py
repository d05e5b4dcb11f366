"""Write-side of environments: create, open and close, join, chat, moderate."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import base58
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from environments import presence
from environments.models import ChatMessage, Environment, Position, environment_id_validator
from environments.selectors import chat_view, environment_state
from idempotency.models import Receipt
from idempotency.services import receipt_answer, request_key, run_once
from kernel.realtime import Event, Origin, publish_on_commit, rewards_key, touch_on_commit
from protocol.addresses import is_public_key
from protocol.errors import DomainError, ErrorCode
from trading import curve
from trading.locks import lock_environment, lock_position

MAX_NAME = 64
MAX_FEE_BPS = 1000


def generate_mint() -> str:
    """A random base58 address for a purely virtual token."""
    return base58.b58encode(secrets.token_bytes(32)).decode()


def _check_mint(token_mint: str) -> str:
    if is_public_key(token_mint):
        return token_mint
    raise DomainError(ErrorCode.INVALID_MESSAGE, "tokenMint must be a base58 address (32 bytes)")


# CurveConstants attribute → the Environment field that stores it.
CONSTANT_FIELDS = {
    "virtual_sol": "initial_virtual_sol",
    "virtual_token": "initial_virtual_token",
    "real_token": "initial_real_token",
    "total_supply": "total_supply",
    "protocol_fee_bps": "protocol_fee_bps",
    "creator_fee_bps": "creator_fee_bps",
    "starting_sol_balance": "starting_sol_balance",
}


@dataclass(frozen=True, slots=True)
class CurveConstants:
    """What an operator may choose when creating an environment; pump.fun's by default."""

    virtual_sol: int = curve.DEFAULT_VIRTUAL_SOL
    virtual_token: int = curve.DEFAULT_VIRTUAL_TOKEN
    real_token: int = curve.DEFAULT_REAL_TOKEN
    total_supply: int = curve.DEFAULT_TOTAL_SUPPLY
    protocol_fee_bps: int = curve.DEFAULT_PROTOCOL_FEE_BPS
    creator_fee_bps: int = curve.DEFAULT_CREATOR_FEE_BPS
    starting_sol_balance: int = curve.DEFAULT_STARTING_SOL

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> CurveConstants:
        """Read the constants from a mapping keyed by ``Environment``'s field names."""
        return cls(**{name: data[field] for name, field in CONSTANT_FIELDS.items()})

    def validate(self) -> None:
        problems = []
        if self.virtual_sol <= 0 or self.virtual_token <= 0:
            problems.append("virtual reserves must be positive")
        if not 0 < self.real_token < self.virtual_token:
            problems.append("real tokens must be positive and below the virtual tokens")
        if self.real_token > self.total_supply:
            problems.append("real tokens cannot exceed the total supply")
        for name in ("protocol_fee_bps", "creator_fee_bps"):
            if not 0 <= getattr(self, name) <= MAX_FEE_BPS:
                problems.append(f"{name} must be between 0 and {MAX_FEE_BPS}")
        if self.starting_sol_balance < 0:
            problems.append("the starting balance cannot be negative")
        if any(value > 2**63 - 1 for value in (self.virtual_sol, self.virtual_token)):
            problems.append("reserves must fit in 63 bits")
        if problems:
            raise DomainError(ErrorCode.INVALID_MESSAGE, "; ".join(problems))


def environment_create(
    *,
    name: str,
    token_mint: str | None = None,
    launched_by: str = "",
    constants: CurveConstants | None = None,
    environment_id: str | None = None,
    is_open: bool = True,
    request_id: str | None = None,
) -> Environment:
    """Create an environment with a fresh curve; ``launched_by`` is the launching wallet.

    The launcher's ``REWARD_UPDATE`` subscribers are told after commit. With ``request_id`` a
    wallet launches at most once per id: a repeat raises :class:`idempotency.services.Replay`
    whose answer names the environment.
    """
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise DomainError(ErrorCode.INVALID_MESSAGE, f"name must be 1-{MAX_NAME} characters")
    constants = constants or CurveConstants()
    constants.validate()
    fields: dict[str, Any] = {}
    if environment_id is not None:
        try:
            environment_id_validator(environment_id)
        except ValidationError as exc:
            raise DomainError(ErrorCode.INVALID_MESSAGE, exc.messages[0]) from None
        fields["id"] = environment_id
    fields.update(
        name=name,
        token_mint=_check_mint(token_mint) if token_mint else generate_mint(),
        launched_by=launched_by,
        is_open=is_open,
        initial_virtual_sol=constants.virtual_sol,
        initial_virtual_token=constants.virtual_token,
        initial_real_token=constants.real_token,
        total_supply=constants.total_supply,
        protocol_fee_bps=constants.protocol_fee_bps,
        creator_fee_bps=constants.creator_fee_bps,
        starting_sol_balance=constants.starting_sol_balance,
        virtual_sol_reserves=constants.virtual_sol,
        virtual_token_reserves=constants.virtual_token,
        real_sol_reserves=0,
        real_token_reserves=constants.real_token,
    )
    key = request_key(
        wallet=launched_by,
        request_id=request_id,
        kind="LAUNCH",
        params={"name": name, "tokenMint": token_mint},
    )

    def create(receipt: Receipt | None) -> Environment:
        environment = Environment.objects.create(**fields)
        if launched_by:  # after the insert, so the update it pushes counts this launch
            touch_on_commit(rewards_key(launched_by))
        receipt_answer(receipt, {"id": environment.id})
        return environment

    return run_once(key, create)


def environment_set_open(*, environment_id: str, is_open: bool) -> Environment:
    """Open or close an environment to trading (operators)."""
    with transaction.atomic():
        environment = lock_environment(environment_id)
        if environment.is_open != is_open:
            environment.is_open = is_open
            environment.save(update_fields=["is_open"])
        return environment


def environment_join(*, environment_id: str, wallet: str) -> tuple[Environment, Position]:
    """Read the environment and the wallet's position, opening one with the starting balance.

    Joining again changes nothing; a closed environment can still be joined to watch it.
    """
    environment = Environment.objects.filter(pk=environment_id).first()
    if environment is None:
        raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found")
    position = Position.objects.filter(environment=environment, wallet=wallet).first()
    if position is None:
        try:
            with transaction.atomic():
                position = Position.objects.create(
                    environment=environment,
                    wallet=wallet,
                    sol_balance=environment.starting_sol_balance,
                )
        except IntegrityError:  # another connection of the same wallet joined first
            position = Position.objects.get(environment=environment, wallet=wallet)
    return environment, position


def chat_post(
    *,
    environment_id: str,
    wallet: str,
    message: str,
    origin: Origin | None = None,
    request_id: str | None = None,
    request_item: int = 0,
) -> ChatMessage:
    """Store a chat line under the environment's next sequence and broadcast it after commit.

    With ``request_id`` the line is posted at most once: a repeat raises
    :class:`idempotency.services.Replay` carrying the ``CHAT_MESSAGE`` first sent.
    """
    key = request_key(
        wallet=wallet,
        request_id=request_id,
        item=request_item,
        kind="CHAT_MESSAGE",
        params={"environmentId": environment_id, "message": message},
    )

    def post(receipt: Receipt | None) -> ChatMessage:
        environment = lock_environment(environment_id)
        lock_position(environment, wallet)  # only participants speak
        environment.sequence += 1
        environment.save(update_fields=["sequence"])
        chat = ChatMessage.objects.create(
            environment=environment, wallet=wallet, message=message, sequence=environment.sequence
        )
        event = Event(
            environment_id=environment.id,
            sequence=chat.sequence,
            type="CHAT_MESSAGE",
            data=chat_view(chat),
            origin=origin,
        )
        publish_on_commit(event)
        receipt_answer(receipt, event.data)
        return chat

    return run_once(key, post)


def chat_set_hidden(*, message_ids: list[int], hidden: bool) -> int:
    """Hide or show chat lines (operators); returns how many changed."""
    return (
        ChatMessage.objects.filter(pk__in=message_ids).exclude(hidden=hidden).update(hidden=hidden)
    )


def participant_enter(*, environment_id: str, wallet: str, connection: str) -> dict[str, Any]:
    """Join for one connection: open the position if needed, mark the wallet present, and
    return its ``ENVIRONMENT_STATE``."""
    environment, position = environment_join(environment_id=environment_id, wallet=wallet)
    presence.backend().add(environment.id, connection, wallet)
    return environment_state(environment, position)


def participant_leave(*, environment_ids: list[str], wallet: str, connection: str) -> None:
    """A connection closed or left: it no longer counts as present."""
    for environment_id in environment_ids:
        presence.backend().remove(environment_id, connection, wallet)
