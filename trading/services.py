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
from kernel.clock import millis
from kernel.db import sql_column, sql_table
from kernel.realtime import Event, publish_on_commit, rewards_key, touch_on_commit
from protocol.errors import DomainError, ErrorCode
from trading import curve, quotes
from trading.models import MarketEvent, MinuteCandle, Trade
from trading.selectors import pool_data
from trading.state import MARKET_COLUMNS, RESERVE_FIELDS, market_from_columns, reserve_values


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
    by one statement, and written by plain statements (on PostgreSQL sent in one round trip),
    with no ORM query building in between.

    A buy that completes the curve graduates the market in the same transaction: the trade
    takes sequence ``n``, the migration to the pool (a ``MarketEvent``) ``n + 1``, and both are
    published after commit; the trader's own copy says what of its budget was not spent.
    """
    locked = _lock(environment_id, wallet)
    market = locked.market
    _refuse_closed(is_open=locked.is_open, market=market)
    available = locked.sol_balance if is_buy else locked.token_balance
    if amount > available:
        raise DomainError(
            ErrorCode.INSUFFICIENT_BALANCE,
            "not enough SOL" if is_buy else "not enough tokens",
            {"available": str(available), "requested": str(amount)},
        )
    result = _quote(market, amount=amount, is_buy=is_buy)
    if result.refusal is not None:
        raise DomainError(
            ErrorCode.INVALID_MESSAGE,
            result.refusal.message,
            {"limit": result.refusal.limit, "value": result.refusal.value},
        )
    fill = result.fill
    if min_amount_out is not None and fill.min_amount_out < min_amount_out:
        raise DomainError(
            ErrorCode.SLIPPAGE_EXCEEDED,
            "the trade would give less than minAmountOut",
            {"amountOut": str(fill.min_amount_out), "minAmountOut": str(min_amount_out)},
        )

    now = timezone.now()
    sequence = locked.sequence + 1
    market_after = market.after(result)
    # The trade records the reserves where it traded: the curve's virtual ones, or the pool's.
    sol_after, token_after = fill.after.reserves
    graduation = None
    if result.pool_after is not None:
        graduation = protocol.MarketGraduated(
            environmentId=environment_id,
            sequence=sequence + 1,
            round=locked.round,
            pool=pool_data(result.pool_after),
            migrationFee=str(result.migration_fee),
            timestamp=millis(now),
        )
    trade = Trade(
        environment_id=environment_id,
        wallet=wallet,
        is_buy=is_buy,
        amount=amount,
        sol_amount=fill.sol_amount,
        token_amount=fill.token_amount,
        protocol_fee=fill.protocol_fee,
        creator_fee=fill.creator_fee,
        lp_fee=fill.lp_fee,
        phase=result.phase,
        round=locked.round,
        sequence=sequence,
        virtual_sol_after=sol_after,
        virtual_token_after=token_after,
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
    trade.pk = _write(trade, position, market_after, graduation)
    trade._state.adding, trade._state.db = False, connection.alias  # as if read back
    touch_on_commit(rewards_key(wallet))  # its volume, and so perhaps its tier, changed
    executed = trade_executed_view(trade)  # the same builder reads it back after a Redis loss
    publish_on_commit(Event(environment_id, sequence, "VIRTUAL_TRADE_EXECUTED", executed))
    if graduation is not None:
        publish_on_commit(Event(environment_id, sequence + 1, "MARKET_GRADUATED", graduation))
    own = protocol.TradeExecuted.model_validate(
        {
            **protocol.dump(executed),
            "balance": protocol.dump(balance_view(position)),
            **({"unspent": str(result.unspent)} if graduation is not None else {}),
        }
    )
    receipt_answer(receipt, protocol.dump(own))
    return TradeResult(trade, position, own)


def _refuse_closed(*, is_open: bool, market: quotes.Market) -> None:
    """ENVIRONMENT_CLOSED for an environment an operator closed, or a complete curve that never
    migrated (one completed before graduation existed)."""
    if not is_open:
        raise DomainError(ErrorCode.ENVIRONMENT_CLOSED, "trading is closed")
    if market.phase == quotes.CURVE and market.curve.complete:
        raise DomainError(ErrorCode.ENVIRONMENT_CLOSED, "the curve is complete")


def _quote(market: quotes.Market, *, amount: int, is_buy: bool) -> quotes.Quote:
    try:
        return quotes.quote(market, amount=amount, is_buy=is_buy)
    except curve.CurveError as exc:
        raise DomainError(ErrorCode.INVALID_MESSAGE, "amount too small") from exc


def trade_quote(*, environment_id: str, amount: int, is_buy: bool) -> protocol.TradeQuote:
    """``TRADE_QUOTE``: what ``VIRTUAL_TRADE`` with these values would do now, computed by the
    code that executes trades (:func:`trading.quotes.quote`) on the environment as read now,
    without a lock; nothing changes.

    Refusals as a trade's, in its order: ENVIRONMENT_NOT_FOUND, ENVIRONMENT_CLOSED, an amount too
    small (INVALID_MESSAGE). A limit that would refuse the trade is reported in ``refusedBy``.
    The balance is not checked: a quote needs no sign-in.
    """
    environment = (
        Environment.objects.filter(pk=environment_id)
        .only("is_open", *RESERVE_FIELDS, *MARKET_COLUMNS)
        .first()
    )
    if environment is None:
        raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found")
    market = environment.market
    _refuse_closed(is_open=environment.is_open, market=market)
    result = _quote(market, amount=amount, is_buy=is_buy)
    fill = result.fill
    return protocol.TradeQuote(
        environmentId=environment_id,
        phase=result.phase,
        isBuy=is_buy,
        amount=str(amount),
        amountOut=str(fill.min_amount_out),
        solAmount=str(fill.sol_amount),
        tokenAmount=str(fill.token_amount),
        fees=protocol.QuoteFees(
            protocol=str(fill.protocol_fee), creator=str(fill.creator_fee), lp=str(fill.lp_fee)
        ),
        priceBefore=curve.format_price(result.price_before),
        priceAfter=curve.format_price(result.price_after),
        averagePrice=curve.format_price(fill.price),
        priceImpactBps=result.price_impact_bps,
        unspent=str(result.unspent),
        graduates=result.graduates,
        refusedBy=None
        if result.refusal is None
        else protocol.LimitRefusal(limit=result.refusal.limit, value=result.refusal.value),
    )


@dataclass(frozen=True, slots=True)
class _Locked:
    """The two rows a trade locks, as read under their locks."""

    is_open: bool
    sequence: int
    round: int
    market: quotes.Market
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
    "lp_fee",
    "phase",
    "round",
    "sequence",
    "virtual_sol_after",
    "virtual_token_after",
    "created_at",
)
CANDLE_COLUMNS = (
    "environment",
    "round",
    "minute",
    "sol_amount",
    "trades",
    "open",
    "high",
    "low",
    "close",
)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The trade's SQL, built once per database vendor from the models' metadata (so a renamed
    column cannot drift from it); every value is a parameter."""

    lock: str
    environment: str
    position: str
    candle: str
    trade: str
    event: str


ENVIRONMENT_WRITES = (
    *RESERVE_FIELDS,
    "phase",
    "pool_sol_reserves",
    "pool_token_reserves",
    "market_cap",
    "last_trade_at",
    "sequence",
)
EVENT_COLUMNS = ("environment", "sequence", "round", "kind", "data", "created_at")


@functools.cache
def _statements(vendor: str) -> _Statements:
    e, p, t, v, m = Environment, Position, Trade, MinuteCandle, MarketEvent
    selected = ", ".join(
        [
            f"e.{sql_column(e, name)}"
            for name in ("is_open", "sequence", "round", *RESERVE_FIELDS, *MARKET_COLUMNS)
        ]
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
    graduated = sql_column(e, "graduated_at")
    reserves = ", ".join(f"{sql_column(e, name)} = %s" for name in ENVIRONMENT_WRITES)
    candle = sql_table(v)
    bucket = ", ".join(sql_column(v, name) for name in ("environment", "round", "minute"))
    greatest, least = ("GREATEST", "LEAST") if vendor == "postgresql" else ("MAX", "MIN")
    amount, trades, high, low, close = (
        sql_column(v, name) for name in ("sol_amount", "trades", "high", "low", "close")
    )
    candle_columns = ", ".join(sql_column(v, name) for name in CANDLE_COLUMNS)
    trade_columns = ", ".join(sql_column(t, name) for name in TRADE_COLUMNS)
    event_columns = ", ".join(sql_column(m, name) for name in EVENT_COLUMNS)
    return _Statements(
        lock=lock,
        environment=(
            f"UPDATE {sql_table(e)} SET {reserves},"  # noqa: S608
            f" {graduated} = COALESCE({graduated}, %s) WHERE {sql_column(e, 'id')} = %s"
        ),
        position=(
            f"UPDATE {sql_table(p)} SET {sql_column(p, 'sol_balance')} = %s,"  # noqa: S608
            f" {sql_column(p, 'token_balance')} = %s, {sql_column(p, 'updated_at')} = %s,"
            f" {sql_column(p, 'last_traded_at')} = %s WHERE {sql_column(p, 'id')} = %s"
        ),
        candle=(
            f"INSERT INTO {candle} ({candle_columns})"  # noqa: S608
            f" VALUES ({', '.join(['%s'] * len(CANDLE_COLUMNS))})"
            f" ON CONFLICT ({bucket}) DO UPDATE SET {amount} = {candle}.{amount}"
            f" + excluded.{amount}, {trades} = {candle}.{trades} + 1,"
            f" {high} = {greatest}({candle}.{high}, excluded.{high}),"
            f" {low} = {least}({candle}.{low}, excluded.{low}), {close} = excluded.{close}"
        ),
        trade=(
            f"INSERT INTO {sql_table(t)} ({trade_columns})"  # noqa: S608
            f" VALUES ({', '.join(['%s'] * len(TRADE_COLUMNS))}) RETURNING {sql_column(t, 'id')}"
        ),
        event=(
            f"INSERT INTO {sql_table(m)} ({event_columns})"  # noqa: S608
            f" VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))})"
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
    is_open, sequence, round_, *values = row  # in the order of the statement's columns
    columns = (*RESERVE_FIELDS, *MARKET_COLUMNS)
    position_id, sol_balance, token_balance = values[len(columns) :]
    return _Locked(
        is_open=bool(is_open),
        sequence=sequence,
        round=round_,
        market=market_from_columns(dict(zip(columns, values[: len(columns)], strict=True))),
        position_id=position_id,
        sol_balance=sol_balance,
        token_balance=token_balance,
    )


def _write(
    trade: Trade,
    position: Position,
    after: quotes.Market,
    graduation: protocol.MarketGraduated | None,
) -> int:
    """Store the market and sequence, the balances, the minute's candle, the trade and (when
    the trade graduated the market) the graduation event; return the trade's id.

    Plain statements with the values already computed; on PostgreSQL they go in one pipeline,
    one round trip while the environment's lock is held. The candle is an upsert: the
    environment's lock makes it race-free, and one statement serves the minute's first trade
    and every later one.
    """
    sql = _statements(connection.vendor)
    ops = connection.ops
    now = ops.adapt_datetimefield_value(trade.created_at)
    minute = ops.adapt_datetimefield_value(trade.created_at.replace(second=0, microsecond=0))
    pool_after = after.pool
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
            [
                *reserve_values(after.curve),
                after.phase,
                0 if pool_after is None else pool_after.sol,
                0 if pool_after is None else pool_after.token,
                after.market_cap,
                now,
                trade.sequence if graduation is None else graduation.sequence,
                None if graduation is None else now,
                trade.environment_id,
            ],
        )
        cursor.execute(
            sql.position, [position.sol_balance, position.token_balance, now, now, position.pk]
        )
        price = trade.price
        cursor.execute(
            sql.candle,
            [trade.environment_id, trade.round, minute, trade.sol_amount, 1, *[price] * 4],
        )
        if graduation is not None:
            data = MarketEvent._meta.get_field("data").get_db_prep_save(
                protocol.dump(graduation), connection
            )
            cursor.execute(
                sql.event,
                [
                    trade.environment_id,
                    graduation.sequence,
                    trade.round,
                    MarketEvent.Kind.GRADUATED,
                    data,
                    now,
                ],
            )
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
                trade.lp_fee,
                trade.phase,
                trade.round,
                trade.sequence,
                trade.virtual_sol_after,
                trade.virtual_token_after,
                now,
            ],
        )
        row = cursor.fetchone()
    return int(row[0])
