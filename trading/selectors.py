"""Read-side of trading: trades as clients see them, a market's price, its analytics and candles.

Analytics and candles cover the market's current round (``round`` on trades and candles) unless
asked otherwise; they read the per-minute candles (:class:`trading.models.MinuteCandle`, at most
1,440 rows a day) and never a day of trades.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Context, Decimal
from typing import Any

from django.db import models
from django.db.models import (
    Count,
    Func,
    Max,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

import protocol
from environments.models import Environment, Position
from kernel.clock import millis
from trading import curve, pool
from trading.models import MinuteCandle, Trade
from trading.state import CurveState, Phase

VOLUME_WINDOW = timedelta(hours=24)
MINUTE = timedelta(minutes=1)
# Published fractions (price change, progress): 10 significant digits, no exponent.
_FRACTION_CONTEXT = Context(prec=10)
# Progress rounds down, so that "1" means complete and nothing less.
_PROGRESS_CONTEXT = Context(prec=10, rounding=ROUND_DOWN)
_EXACT = Context(prec=100)


def trade_view(trade: Trade) -> protocol.TradeView:
    """The ``trade`` object of the protocol (seed fields plus id, sequence, amounts, fee).

    Built without validation (``model_construct``): it goes out with every trade and in every
    history, and a stored trade's values are already what the declaration allows.
    """
    return protocol.TradeView.model_construct(
        userId=trade.wallet,
        amount=str(trade.amount),
        price=curve.format_price(trade.price),
        timestamp=millis(trade.created_at),
        isBuy=trade.is_buy,
        id=str(trade.pk),
        sequence=trade.sequence,
        solAmount=str(trade.sol_amount),
        tokenAmount=str(trade.token_amount),
        fee=str(trade.fee),
    )


def trades_recent(
    environment_id: str, *, upto: int, round_: int | None = None, limit: int = 50
) -> list[Trade]:
    """The last ``limit`` trades of an environment up to sequence ``upto``, oldest first; only
    those of round ``round_`` when given (``ENVIRONMENT_STATE`` lists the current round's)."""
    trades = Trade.objects.filter(environment_id=environment_id, sequence__lte=upto)
    if round_ is not None:
        trades = trades.filter(round=round_)
    return list(reversed(trades.order_by("-sequence")[:limit]))


def trades_page(environment_id: str, *, before: int | None, limit: int) -> QuerySet[Trade]:
    """Trades newest first, older than sequence ``before`` when given."""
    trades = Trade.objects.filter(environment_id=environment_id)
    if before is not None:
        trades = trades.filter(sequence__lt=before)
    return trades.order_by("-sequence")[:limit]


# --- price --------------------------------------------------------------------------------------


def _pool(state: CurveState) -> pool.Pool:
    return pool.Pool(sol=state.pool_sol_reserves, token=state.pool_token_reserves)


def market_price(state: CurveState) -> Decimal:
    """Spot price in SOL per whole token (20 significant digits): the curve's, or the pool's
    (pool SOL / pool tokens) once the market has graduated."""
    if state.phase == Phase.POOL:
        return _pool(state).spot_price
    return state.curve.spot_price


def market_cap(state: CurveState) -> int:
    """Lamports: the spot price of the whole supply, on the curve or (graduated) the pool."""
    if state.phase == Phase.POOL:
        return _pool(state).market_cap
    return state.curve.market_cap


def pool_view(state: CurveState) -> protocol.Pool | None:
    """The pool a graduated market trades on; None while it trades on its curve."""
    if state.phase != Phase.POOL:
        return None
    graduated = state.market.pool
    return pool_data(graduated) if graduated is not None else None


def pool_data(state: pool.Pool) -> protocol.Pool:
    """A pool as clients see it (in the state, prices and ``MARKET_GRADUATED``)."""
    return protocol.Pool(
        solReserves=str(state.sol),
        tokenReserves=str(state.token),
        fees=protocol.PoolFees(
            lpBps=state.lp_fee_bps,
            protocolBps=state.protocol_fee_bps,
            creatorBps=state.creator_fee_bps,
        ),
    )


# --- 24 h analytics -----------------------------------------------------------------------------
#
# The window is ``(now - 24 h, now]``. Whole minutes after the one the window starts in come from
# the candles; that edge minute is summed from its own trades (one minute of them, by the index
# on environment and created_at), so a trade drops out exactly 24 hours after it happened. Every
# figure is a correlated subquery on the environment row: one statement for one environment or
# for a whole page of them, each subquery an index range scan.


def _window(now: datetime) -> tuple[datetime, datetime]:
    """The window's start and the start of the minute it falls in."""
    start = now - VOLUME_WINDOW
    return start, start.replace(second=0, microsecond=0)


def _total(rows: QuerySet[Any], aggregate: models.Aggregate) -> Coalesce:
    """``aggregate`` over ``rows`` (correlated on the environment), 0 when there are none."""
    total = rows.order_by().values("environment").annotate(total=aggregate).values("total")
    return Coalesce(Subquery(total), Value(0), output_field=models.BigIntegerField())


def _candles() -> QuerySet[MinuteCandle]:
    return MinuteCandle.objects.filter(environment=OuterRef("pk"), round=OuterRef("round"))


def _trades() -> QuerySet[Trade]:
    return Trade.objects.filter(environment=OuterRef("pk"), round=OuterRef("round"))


def volume_expression(now: datetime) -> models.Expression:
    """An ``Environment`` annotation: lamports traded in its current round in the window."""
    start, edge = _window(now)
    whole = _candles().filter(minute__gt=edge, minute__lte=now)
    partial = _trades().filter(created_at__gt=start, created_at__lt=edge + MINUTE)
    return _total(whole, Sum("sol_amount")) + _total(partial, Sum("sol_amount"))


def analytics_annotations(now: datetime) -> dict[str, Any]:
    """Annotations of an ``Environment`` queryset that :func:`analytics_of` turns into figures."""
    start, edge = _window(now)
    whole = _candles().filter(minute__gt=edge, minute__lte=now)
    partial = _trades().filter(created_at__gt=start, created_at__lt=edge + MINUTE)
    # The reference price: the last trade at or before the window's start...
    reference = _trades().filter(created_at__gte=edge, created_at__lte=start)
    reference = reference.order_by("-created_at", "-sequence")
    return {
        "a_volume": volume_expression(now),
        "a_trades": _total(whole, Sum("trades")) + _total(partial, Count("id")),
        # Positions are reset (last_traded_at NULL) when a round starts: current round only.
        "a_traders": _total(
            Position.objects.filter(environment=OuterRef("pk"), last_traded_at__gt=start),
            Count("id"),
        ),
        "a_last": Subquery(_candles().order_by("-minute").values("close")[:1]),
        # ... in the edge minute (from its trades: a price needs both amounts) ...
        "a_ref_sol": Subquery(reference.values("sol_amount")[:1]),
        "a_ref_token": Subquery(reference.values("token_amount")[:1]),
        # ... else the close of the last minute before it, else the round's first trade.
        "a_ref_close": Subquery(
            _candles().filter(minute__lt=edge).order_by("-minute").values("close")[:1]
        ),
        "a_first": Subquery(_candles().order_by("minute").values("open")[:1]),
    }


def _fraction(value: Decimal, context: Context = _FRACTION_CONTEXT) -> str:
    text = format(context.plus(value).normalize(context), "f")
    return "0" if text == "-0" else text


def progress(state: CurveState) -> str:
    """The part of the curve's real tokens sold, as a fraction; "1" once complete or pooled."""
    if state.phase == Phase.POOL or state.complete:
        return "1"
    sold = state.initial_real_token - state.real_token_reserves
    return _fraction(
        _PROGRESS_CONTEXT.divide(Decimal(sold), Decimal(state.initial_real_token)),
        _PROGRESS_CONTEXT,
    )


_NOTHING: dict[str, Any] = dict.fromkeys(
    ("a_last", "a_ref_sol", "a_ref_token", "a_ref_close", "a_first")
) | {"a_volume": 0, "a_trades": 0, "a_traders": 0}


def analytics_of(state: CurveState, row: dict[str, Any]) -> dict[str, Any]:
    """The summary's analytics fields from an environment and its :func:`analytics_annotations`."""
    last: Decimal | None = row["a_last"]
    change = "0"
    if last is not None:
        if row["a_ref_sol"] is not None:
            reference = curve.average_price(row["a_ref_sol"], row["a_ref_token"])
        else:
            reference = row["a_ref_close"] if row["a_ref_close"] is not None else row["a_first"]
        if reference:
            change = _fraction(_EXACT.divide(_EXACT.subtract(last, reference), reference))
    return {
        "volume24h": str(row["a_volume"]),
        "trades24h": int(row["a_trades"]),
        "uniqueTraders24h": int(row["a_traders"]),
        "priceChange24h": change,
        "progress": progress(state),
    }


def market_analytics_many(
    states: Iterable[CurveState], *, now: datetime
) -> dict[Any, dict[str, Any]]:
    """:func:`market_analytics` of several markets in one statement, by primary key."""
    states = list(states)
    if not states:
        return {}
    ids = [state.pk for state in states]
    rows = (
        Environment.objects.filter(pk__in=ids).order_by().values("pk", **analytics_annotations(now))
    )
    by_pk: dict[Any, dict[str, Any]] = {row["pk"]: dict(row) for row in rows}
    # A market deleted meanwhile has no row: it shows nothing traded.
    return {state.pk: analytics_of(state, by_pk.get(state.pk, _NOTHING)) for state in states}


def market_analytics(state: CurveState, *, now: datetime) -> dict[str, Any]:
    """The lobby's figures of a market's current round as of ``now`` (one statement):
    ``volume24h`` (lamports, fees excluded), ``trades24h``, ``uniqueTraders24h``,
    ``priceChange24h`` (the last trade's price against the reference: the last trade at or
    before ``now - 24 h``, else the round's first trade; "0" without trades) and ``progress``."""
    return market_analytics_many([state], now=now)[state.pk]


def volume_24h(environment_id: str, *, now: datetime) -> int:
    """Lamports traded in the environment's current round (``solAmount``, fees excluded) in the
    24 hours up to ``now``; 0 for an unknown environment."""
    total = (
        Environment.objects.filter(pk=environment_id)
        .order_by()
        .annotate(volume=volume_expression(now))
        .values_list("volume", flat=True)
        .first()
    )
    return int(total or 0)


# --- candles ------------------------------------------------------------------------------------

INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14_400, "1d": 86_400}


class _Bucket(Func):
    """The number of the interval (``seconds`` long, from the Unix epoch) a minute falls in."""

    output_field = models.BigIntegerField()

    def __init__(self, expression: Any, seconds: int) -> None:
        super().__init__(expression, Value(seconds))

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "CAST(FLOOR(EXTRACT(EPOCH FROM %(expressions)s) / %(seconds)s) AS BIGINT)"
        return self._as(compiler, connection, template)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "(CAST(strftime('%%%%s', %(expressions)s) AS INTEGER) / %(seconds)s)"
        return self._as(compiler, connection, template)

    def _as(self, compiler: Any, connection: Any, template: str) -> Any:
        column, seconds = self.get_source_expressions()
        column_sql, column_params = compiler.compile(column)
        seconds_sql, seconds_params = compiler.compile(seconds)
        sql = template % {"expressions": column_sql, "seconds": seconds_sql}
        return sql, (*column_params, *seconds_params)


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV candle: trade prices (fees excluded), lamports (fees excluded), trades."""

    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    trades: int


@dataclass(frozen=True, slots=True)
class CandlePage:
    """Candles oldest first; ``older`` is where the next page (older candles) ends, exclusive,
    or None when there is nothing older."""

    candles: list[Candle]
    older: datetime | None


def _epoch(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())


def candles_page(
    environment_id: str, *, round_: int, seconds: int, before: int | None, limit: int
) -> CandlePage:
    """Candles of a round's intervals (``seconds`` long, aligned on the Unix epoch) that start
    before ``before`` (milliseconds, exclusive; no bound when None), aggregated in SQL from the
    minute candles; intervals without trades have no candle.

    A page is the ``limit`` intervals that end with the newest candle found, so it reads at most
    ``limit * seconds / 60`` minute rows and is empty only when there is no candle at all;
    :attr:`CandlePage.older` skips any quiet stretch to the next older candle.
    """
    minutes = MinuteCandle.objects.filter(environment_id=environment_id, round=round_)
    below = minutes
    if before is not None:
        # The intervals that start before ``before``: every minute below the next one's start.
        first_excluded = ((before - 1) // (seconds * 1000) + 1) * seconds
        below = minutes.filter(minute__lt=datetime.fromtimestamp(first_excluded, tz=UTC))
    newest = below.order_by("-minute").values_list("minute", flat=True).first()
    if newest is None:
        return CandlePage([], None)
    upper = datetime.fromtimestamp((_epoch(newest) // seconds + 1) * seconds, tz=UTC)
    lower = upper - timedelta(seconds=seconds * limit)
    rows = list(
        minutes.filter(minute__gte=lower, minute__lt=upper)
        .annotate(bucket=_Bucket("minute", seconds))
        .values("bucket")
        .annotate(
            first=Min("minute"),
            last=Max("minute"),
            high=Max("high"),
            low=Min("low"),
            volume=Sum("sol_amount"),
            trades=Sum("trades"),
        )
        .order_by("bucket")
    )
    ends = {row["first"] for row in rows} | {row["last"] for row in rows}
    prices = {
        minute: (open_, close)
        for minute, open_, close in minutes.filter(minute__in=ends).values_list(
            "minute", "open", "close"
        )
    }
    candles = [
        Candle(
            start=datetime.fromtimestamp(row["bucket"] * seconds, tz=UTC),
            open=prices[row["first"]][0],
            high=row["high"],
            low=row["low"],
            close=prices[row["last"]][1],
            volume=int(row["volume"]),
            trades=int(row["trades"]),
        )
        for row in rows
    ]
    older = minutes.filter(minute__lt=lower).order_by("-minute").values_list("minute", flat=True)
    next_minute = older.first()
    if next_minute is None:
        return CandlePage(candles, None)
    return CandlePage(
        candles, datetime.fromtimestamp((_epoch(next_minute) // seconds + 1) * seconds, tz=UTC)
    )


def stored_price(value: Decimal) -> str:
    """A stored price (numeric, 40 places) as trade prices are published: normalized, no
    exponent."""
    return curve.format_price(value.normalize(_EXACT))
