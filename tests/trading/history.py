"""Trades at chosen moments, and the figures recomputed from the stored trades.

The trades run through the real service (so the per-minute candles and the positions'
``last_traded_at`` are written by the trade's own statements) with ``timezone.now`` set to the
moment wanted; the recomputations read every trade, as the selectors under test must not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

import pytest
from django.utils import timezone

from environments.services import environment_join
from trading.models import Trade
from trading.services import trade_execute

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = timedelta(hours=24)


class Clock:
    """``timezone.now()`` frozen at a moment the test moves."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
        self.moment = moment
        monkeypatch.setattr(timezone, "now", lambda: self.moment)


def wallet(name: str) -> str:
    return (name + "1" * 44)[:44]


def trade_at(
    clock: Clock, moment: datetime, environment_id: str, who: str, amount: int, *, is_buy: bool
) -> Trade:
    clock.moment = moment
    environment_join(environment_id=environment_id, wallet=who)
    result = trade_execute(environment_id=environment_id, wallet=who, amount=amount, is_buy=is_buy)
    trade = Trade.objects.get(pk=result.trade.pk)
    assert trade.created_at == moment
    return trade


def published(price: Decimal) -> str:
    """A trade price as a candle publishes it: normalized, no exponent."""
    return format(price.normalize(Context(prec=100)), "f")


def expected_candles(trades: list[Trade], seconds: int) -> list[dict[str, Any]]:
    """OHLCV candles of ``seconds`` aligned on the epoch, oldest first, from every trade."""
    buckets: dict[int, list[Trade]] = {}
    for trade in sorted(trades, key=lambda trade: trade.sequence):
        number = int((trade.created_at - EPOCH).total_seconds()) // seconds
        buckets.setdefault(number, []).append(trade)
    return [
        {
            "time": number * seconds * 1000,
            "open": published(group[0].price),
            "high": published(max(trade.price for trade in group)),
            "low": published(min(trade.price for trade in group)),
            "close": published(group[-1].price),
            "volume": str(sum(trade.sol_amount for trade in group)),
            "trades": len(group),
        }
        for number, group in sorted(buckets.items())
    ]


@dataclass(frozen=True)
class Figures:
    volume: int
    trades: int
    traders: int
    change: Decimal


def expected_figures(trades: list[Trade], now: datetime) -> Figures:
    """The 24 h figures of ``trades`` (one round's) as of ``now``, from every trade."""
    start = now - WINDOW
    ordered = sorted(trades, key=lambda trade: trade.sequence)
    inside = [trade for trade in ordered if start < trade.created_at <= now]
    before = [trade for trade in ordered if trade.created_at <= start]
    change = Decimal(0)
    if ordered:
        reference = (before[-1] if before else ordered[0]).price
        last = ordered[-1].price
        change = Context(prec=100).divide(last - reference, reference)
    return Figures(
        volume=sum(trade.sol_amount for trade in inside),
        trades=len(inside),
        traders=len({trade.wallet for trade in inside}),
        change=change,
    )
