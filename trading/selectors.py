"""Read-side of trading: trades as clients see them."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import QuerySet, Sum

import protocol
from kernel.clock import millis
from trading import curve
from trading.models import Trade, VolumeMinute

VOLUME_WINDOW = timedelta(hours=24)


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


def trades_recent(environment_id: str, *, upto: int, limit: int = 50) -> list[Trade]:
    """The last ``limit`` trades of an environment up to sequence ``upto``, oldest first."""
    latest = Trade.objects.filter(environment_id=environment_id, sequence__lte=upto).order_by(
        "-sequence"
    )[:limit]
    return list(reversed(latest))


def trades_page(environment_id: str, *, before: int | None, limit: int) -> QuerySet[Trade]:
    """Trades newest first, older than sequence ``before`` when given."""
    trades = Trade.objects.filter(environment_id=environment_id)
    if before is not None:
        trades = trades.filter(sequence__lt=before)
    return trades.order_by("-sequence")[:limit]


def volume_24h(environment_id: str, *, now: datetime) -> int:
    """Lamports traded (``solAmount``, fees excluded) in the 24 hours up to ``now``.

    Whole minutes come from the per-minute buckets; the minute the window starts in is summed
    from its trades, so a trade drops out exactly 24 hours after it happened.
    """
    start = now - VOLUME_WINDOW
    edge = start.replace(second=0, microsecond=0)  # the minute the window starts in
    whole = VolumeMinute.objects.filter(
        environment_id=environment_id, minute__gt=edge, minute__lte=now
    ).aggregate(total=Sum("sol_amount"))["total"]
    partial = Trade.objects.filter(
        environment_id=environment_id,
        created_at__gt=start,
        created_at__lt=edge + timedelta(minutes=1),
    ).aggregate(total=Sum("sol_amount"))["total"]
    return int(whole or 0) + int(partial or 0)
