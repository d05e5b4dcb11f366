"""Trades: each one a single short transaction with the environment and position locked."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

import protocol
from environments.locks import lock_environment, lock_position
from environments.models import Environment, Position
from environments.selectors import balance_view, trade_executed_view
from idempotency.models import Receipt
from idempotency.services import receipt_answer, request_key, run_once
from kernel.db import sql_column, sql_table
from kernel.realtime import Event, publish_on_commit, rewards_key, touch_on_commit
from protocol.errors import DomainError, ErrorCode
from trading import curve
from trading.models import Trade, VolumeMinute
from trading.state import RESERVE_FIELDS, RESERVES, reserve_values


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
    """The trade itself, inside :func:`run_once`'s transaction.

    This is the hottest write of the application and every environment's trades queue on its
    row lock, so the lock is held for as little as possible: the two rows are locked and read
    by one statement, and written by four plain statements (on PostgreSQL sent in one round
    trip), with no ORM query building in between.
    """
    locked = _lock(environment_id, wallet)
    if not locked.is_open or locked.curve.complete:
        reason = "the curve is complete" if locked.curve.complete else "trading is closed"
        raise DomainError(ErrorCode.ENVIRONMENT_CLOSED, reason)
    available = locked.sol_balance if is_buy else locked.token_balance
    if amount > available:
        raise DomainError(
            ErrorCode.INSUFFICIENT_BALANCE,
            "not enough SOL" if is_buy else "not enough tokens",
            {"available": str(available), "requested": str(amount)},
        )
    try:
        fill = locked.curve.trade(amount=amount, is_buy=is_buy)
    except curve.CurveError as exc:
        raise DomainError(ErrorCode.INVALID_MESSAGE, "amount too small") from exc
    if min_amount_out is not None and fill.min_amount_out < min_amount_out:
        raise DomainError(
            ErrorCode.SLIPPAGE_EXCEEDED,
            "the trade would give less than minAmountOut",
            {"amountOut": str(fill.min_amount_out), "minAmountOut": str(min_amount_out)},
        )

    now = timezone.now()
    sequence = locked.sequence + 1
    after = fill.curve
    trade = Trade(
        environment_id=environment_id,
        wallet=wallet,
        is_buy=is_buy,
        amount=amount,
        sol_amount=fill.sol_amount,
        token_amount=fill.token_amount,
        protocol_fee=fill.protocol_fee,
        creator_fee=fill.creator_fee,
        sequence=sequence,
        virtual_sol_after=after.virtual_sol,
        virtual_token_after=after.virtual_token,
        created_at=now,
    )
    # The position as stored after the trade; its join time, not read, loads if asked for.
    position = Position.from_db(
        connection.alias,
        ["id", "environment_id", "wallet", "sol_balance", "token_balance", "updated_at"],
        [
            locked.position_id,
            environment_id,
            wallet,
            locked.sol_balance + fill.sol_delta,
            locked.token_balance + fill.token_delta,
            now,
        ],
    )
    trade.pk = _write(trade, position, after)
    trade._state.adding, trade._state.db = False, connection.alias  # as if read back
    touch_on_commit(rewards_key(wallet))  # its volume, and so perhaps its tier, changed
    executed = trade_executed_view(trade)  # the same builder reads it back after a Redis loss
    publish_on_commit(Event(environment_id, sequence, "VIRTUAL_TRADE_EXECUTED", executed))
    own = protocol.TradeExecuted.model_validate(
        {**protocol.dump(executed), "balance": protocol.dump(balance_view(position))}
    )
    receipt_answer(receipt, protocol.dump(own))
    return TradeResult(trade, position, own)


@dataclass(frozen=True, slots=True)
class _Locked:
    """The two rows a trade locks, as read under their locks."""

    is_open: bool
    sequence: int
    curve: curve.Curve
    position_id: int
    sol_balance: int
    token_balance: int


TRADE_COLUMNS = (
    "environment",
    "wallet",
    "is_buy",
    "amount",
    "sol_amount",
    "token_amount",
    "protocol_fee",
    "creator_fee",
    "sequence",
    "virtual_sol_after",
    "virtual_token_after",
    "created_at",
)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The trade's SQL, built once per database vendor from the models' metadata (so a renamed
    column cannot drift from it); every value is a parameter."""

    lock: str
    environment: str
    position: str
    volume: str
    trade: str


@functools.cache
def _statements(vendor: str) -> _Statements:
    e, p, t, v = Environment, Position, Trade, VolumeMinute
    selected = ", ".join(
        [f"e.{sql_column(e, name)}" for name in ("is_open", "sequence", *RESERVE_FIELDS)]
        + [f"e.{sql_column(e, name)}" for name in ("protocol_fee_bps", "creator_fee_bps")]
        + [f"p.{sql_column(p, name)}" for name in ("id", "sol_balance", "token_balance")]
    )
    lock = (
        f"SELECT {selected} FROM {sql_table(e)} e JOIN {sql_table(p)} p"  # noqa: S608
        f" ON p.{sql_column(p, 'environment')} = e.{sql_column(e, 'id')}"
        f" WHERE e.{sql_column(e, 'id')} = %s AND p.{sql_column(p, 'wallet')} = %s"
    )
    features = connection.features
    if features.has_select_for_update_of and features.has_select_for_no_key_update:
        lock += " FOR NO KEY UPDATE OF e FOR UPDATE OF p"
    reserves = ", ".join(f"{sql_column(e, name)} = %s" for name in RESERVE_FIELDS)
    amount = sql_column(v, "sol_amount")
    bucket = f"{sql_column(v, 'environment')}, {sql_column(v, 'minute')}"
    trade_columns = ", ".join(sql_column(t, name) for name in TRADE_COLUMNS)
    return _Statements(
        lock=lock,
        environment=(
            f"UPDATE {sql_table(e)} SET {reserves}, {sql_column(e, 'sequence')} = %s"  # noqa: S608
            f" WHERE {sql_column(e, 'id')} = %s"
        ),
        position=(
            f"UPDATE {sql_table(p)} SET {sql_column(p, 'sol_balance')} = %s,"  # noqa: S608
            f" {sql_column(p, 'token_balance')} = %s, {sql_column(p, 'updated_at')} = %s"
            f" WHERE {sql_column(p, 'id')} = %s"
        ),
        volume=(
            f"INSERT INTO {sql_table(v)} ({bucket}, {amount}) VALUES (%s, %s, %s)"  # noqa: S608
            f" ON CONFLICT ({bucket}) DO UPDATE SET {amount} = {sql_table(v)}.{amount}"
            f" + excluded.{amount}"
        ),
        trade=(
            f"INSERT INTO {sql_table(t)} ({trade_columns})"  # noqa: S608
            f" VALUES ({', '.join(['%s'] * len(TRADE_COLUMNS))}) RETURNING {sql_column(t, 'id')}"
        ),
    )


def _lock(environment_id: str, wallet: str) -> _Locked:
    """Lock and read the environment and the wallet's position in one statement.

    The locks are those of :mod:`environments.locks`, in its order: PostgreSQL applies the
    locking clauses table by table as written, the environment's (``NO KEY UPDATE``, so a new
    participant's insert does not queue behind trades) before the position's. SQLite has no
    row locks: its ``BEGIN IMMEDIATE`` transactions already run one writer at a time. When
    the join finds nothing, the lock helpers run to tell which refusal applies.
    """
    with connection.cursor() as cursor:
        cursor.execute(_statements(connection.vendor).lock, [environment_id, wallet])
        row = cursor.fetchone()
    if row is None:
        lock_position(lock_environment(environment_id), wallet)  # raises the refusal
        return _lock(environment_id, wallet)  # the position was created meanwhile
    is_open, sequence, *values = row  # in the order of the statement's columns
    reserves = dict(zip(RESERVES.values(), values[: len(RESERVES)], strict=True))
    protocol_bps, creator_bps, position_id, sol_balance, token_balance = values[len(RESERVES) :]
    return _Locked(
        is_open=bool(is_open),
        sequence=sequence,
        curve=curve.Curve(**reserves, protocol_fee_bps=protocol_bps, creator_fee_bps=creator_bps),
        position_id=position_id,
        sol_balance=sol_balance,
        token_balance=token_balance,
    )


def _write(trade: Trade, position: Position, after: curve.Curve) -> int:
    """Store the curve and sequence, the balances, the minute's volume and the trade; return
    the trade's id.

    Plain statements with the values already computed; on PostgreSQL they go in one pipeline,
    one round trip while the environment's lock is held instead of four. The volume bucket is
    an upsert: the environment's lock makes it race-free, and one statement serves the
    minute's first trade and every later one.
    """
    sql = _statements(connection.vendor)
    ops = connection.ops
    now = ops.adapt_datetimefield_value(trade.created_at)
    minute = ops.adapt_datetimefield_value(trade.created_at.replace(second=0, microsecond=0))
    # A pipeline reports a failed statement when it is read or closed, outside the cursor's
    # own error wrapping: the wrapper around it keeps the errors Django's (IntegrityError...).
    pipeline = (
        connection.connection.pipeline()
        if connection.vendor == "postgresql"
        else contextlib.nullcontext()
    )
    with connection.wrap_database_errors, connection.cursor() as cursor, pipeline:
        cursor.execute(
            sql.environment,
            [*reserve_values(after), trade.sequence, trade.environment_id],
        )
        cursor.execute(
            sql.position, [position.sol_balance, position.token_balance, now, position.pk]
        )
        cursor.execute(sql.volume, [trade.environment_id, minute, trade.sol_amount])
        cursor.execute(
            sql.trade,
            [
                trade.environment_id,
                trade.wallet,
                trade.is_buy,
                trade.amount,
                trade.sol_amount,
                trade.token_amount,
                trade.protocol_fee,
                trade.creator_fee,
                trade.sequence,
                trade.virtual_sol_after,
                trade.virtual_token_after,
                now,
            ],
        )
        row = cursor.fetchone()
    return int(row[0])
