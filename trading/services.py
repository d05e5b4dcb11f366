"""Trades: each one a single short transaction with the environment and position locked."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F

import protocol
from environments.locks import lock_environment, lock_position
from environments.models import Position
from environments.selectors import balance_view, trade_executed_view
from idempotency.models import Receipt
from idempotency.services import receipt_answer, request_key, run_once
from kernel.realtime import Event, publish_on_commit, rewards_key, touch_on_commit
from protocol.errors import DomainError, ErrorCode
from trading import curve
from trading.models import Trade, VolumeMinute
from trading.state import RESERVE_FIELDS


@dataclass(frozen=True, slots=True)
class TradeResult:
    """What a trade did: the trade, the trader's position after it, and the trader's own copy
    of its ``VIRTUAL_TRADE_EXECUTED`` (the public data and its balance)."""

    trade: Trade
    position: Position
    own: protocol.TradeExecuted

    @property
    def sequence(self) -> int:
        """The environment's sequence the trade committed under."""
        return self.trade.sequence


def trade_execute(
    *,
    environment_id: str,
    wallet: str,
    amount: int,
    is_buy: bool,
    min_amount_out: int | None = None,
    request_id: str | None = None,
    request_item: int = 0,
) -> TradeResult:
    """Buy with ``amount`` lamports (fees included) or sell ``amount`` raw tokens.

    Checks run in the contract's order (closed, balance, amount too small, slippage); any
    refusal raises :class:`DomainError` before anything is written. On success the trade,
    the curve, the balance and the sequence change together, and ``VIRTUAL_TRADE_EXECUTED``
    is published after commit; the result carries the trader's own copy.

    With ``request_id`` (item ``request_item`` of a batch) the trade runs at most once for the
    wallet: a repeat raises :class:`idempotency.services.Replay` carrying the trader's own copy
    as it was first sent, and is neither executed nor broadcast again.
    """
    key = request_key(
        wallet=wallet,
        request_id=request_id,
        item=request_item,
        kind="VIRTUAL_TRADE",
        params={
            "environmentId": environment_id,
            "amount": str(amount),
            "isBuy": is_buy,
            "minAmountOut": None if min_amount_out is None else str(min_amount_out),
        },
    )
    return run_once(
        key,
        lambda receipt: _execute(
            environment_id=environment_id,
            wallet=wallet,
            amount=amount,
            is_buy=is_buy,
            min_amount_out=min_amount_out,
            receipt=receipt,
        ),
    )


def _execute(
    *,
    environment_id: str,
    wallet: str,
    amount: int,
    is_buy: bool,
    min_amount_out: int | None,
    receipt: Receipt | None,
) -> TradeResult:
    """The trade itself, inside :func:`run_once`'s transaction."""
    environment = lock_environment(environment_id)
    position = lock_position(environment, wallet)
    if not environment.accepts_trades:
        reason = "the curve is complete" if environment.complete else "trading is closed"
        raise DomainError(ErrorCode.ENVIRONMENT_CLOSED, reason)
    available = position.sol_balance if is_buy else position.token_balance
    if amount > available:
        raise DomainError(
            ErrorCode.INSUFFICIENT_BALANCE,
            "not enough SOL" if is_buy else "not enough tokens",
            {"available": str(available), "requested": str(amount)},
        )
    try:
        fill = environment.curve.trade(amount=amount, is_buy=is_buy)
    except curve.CurveError as exc:
        raise DomainError(ErrorCode.INVALID_MESSAGE, "amount too small") from exc
    if min_amount_out is not None and fill.min_amount_out < min_amount_out:
        raise DomainError(
            ErrorCode.SLIPPAGE_EXCEEDED,
            "the trade would give less than minAmountOut",
            {"amountOut": str(fill.min_amount_out), "minAmountOut": str(min_amount_out)},
        )

    environment.apply_curve(fill.curve)
    environment.sequence += 1
    environment.save(update_fields=[*RESERVE_FIELDS, "sequence"])
    position.sol_balance += fill.sol_delta
    position.token_balance += fill.token_delta
    position.save(update_fields=["sol_balance", "token_balance", "updated_at"])
    trade = Trade.objects.create(
        environment=environment,
        wallet=wallet,
        is_buy=is_buy,
        amount=amount,
        sol_amount=fill.sol_amount,
        token_amount=fill.token_amount,
        protocol_fee=fill.protocol_fee,
        creator_fee=fill.creator_fee,
        sequence=environment.sequence,
        virtual_sol_after=environment.virtual_sol_reserves,
        virtual_token_after=environment.virtual_token_reserves,
    )
    # One UPDATE in the common case; the environment lock makes the first-of-the-minute
    # INSERT race-free, so no savepoint is needed.
    minute = trade.created_at.replace(second=0, microsecond=0)
    bucket = VolumeMinute.objects.filter(environment=environment, minute=minute)
    if not bucket.update(sol_amount=F("sol_amount") + trade.sol_amount):
        VolumeMinute.objects.create(
            environment=environment, minute=minute, sol_amount=trade.sol_amount
        )
    touch_on_commit(rewards_key(wallet))  # its volume, and so perhaps its tier, changed
    executed = trade_executed_view(trade)  # the same builder reads it back after a Redis loss
    publish_on_commit(Event(environment.id, trade.sequence, "VIRTUAL_TRADE_EXECUTED", executed))
    own = protocol.TradeExecuted.model_validate(
        {**protocol.dump(executed), "balance": protocol.dump(balance_view(position))}
    )
    receipt_answer(receipt, protocol.dump(own))
    return TradeResult(trade, position, own)
