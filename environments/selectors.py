"""Read-side of environments: the shapes of ENVIRONMENT_STATE and the HTTP API."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import BigIntegerField, Case, F, Q, QuerySet, Value, When
from django.utils import timezone

import protocol
from environments import presence
from environments.models import ChatMessage, Environment, Position
from kernel.clock import millis
from kernel.realtime import Event
from protocol.errors import DomainError, ErrorCode
from trading import curve
from trading.market import market_snapshot
from trading.models import MarketEvent, Trade
from trading.selectors import (
    VOLUME_WINDOW,
    market_analytics,
    market_analytics_many,
    market_cap,
    market_price,
    pool_view,
    progress,
    trade_view,
    trades_recent,
    volume_expression,
)
from trading.state import Phase

HISTORY_SIZE = 50


def environment_get(environment_id: str) -> Environment | None:
    return Environment.objects.filter(pk=environment_id).first()


# The lobby's orders (pump.fun's board), each ending on unique keys so that pages never overlap.
SORTS = ("newest", "marketCap", "volume24h", "lastTrade")


def environment_list(sort: str = "newest", *, now: datetime | None = None) -> QuerySet[Environment]:
    """Environments in the lobby's ``sort`` order (one of :data:`SORTS`):

    - ``newest``: the most recently created first;
    - ``marketCap``: the largest ``market_cap`` (kept by every trade) first;
    - ``lastTrade``: the most recently traded first, never traded ones last;
    - ``volume24h``: the largest 24 h volume of the current round first. Only environments
      traded in the last 24 hours (``last_trade_at``) have their volume computed, the others
      sort as 0; ties (and all of those) by the last trade, then newest.
    """
    environments = Environment.objects.all()
    newest = ("-created_at", "id")
    last_trade = F("last_trade_at").desc(nulls_last=True)
    if sort == "newest":
        return environments.order_by(*newest)
    if sort == "marketCap":
        return environments.order_by("-market_cap", *newest)
    if sort == "lastTrade":
        return environments.order_by(last_trade, *newest)
    if sort == "volume24h":
        now = timezone.now() if now is None else now
        volume = Case(
            When(last_trade_at__gt=now - VOLUME_WINDOW, then=volume_expression(now)),
            default=Value(0),
            output_field=BigIntegerField(),
        )
        return environments.alias(volume24h=volume).order_by("-volume24h", last_trade, *newest)
    raise DomainError(
        ErrorCode.INVALID_MESSAGE,
        f"sort must be one of {', '.join(SORTS)}",
        {"field": "sort"},
    )


def _summary_fields(
    environment: Environment, *, participants: int, analytics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The summary's fields; ``analytics``: the environment's :func:`market_analytics` when the
    caller read them already (a list reads them for all its environments at once)."""
    if analytics is None:
        analytics = market_analytics(environment, now=timezone.now())
    return {
        "id": environment.id,
        "name": environment.name,
        "tokenMint": environment.token_mint,
        "virtualSolReserves": str(environment.virtual_sol_reserves),
        "virtualTokenReserves": str(environment.virtual_token_reserves),
        "participants": participants,
        "realSolReserves": str(environment.real_sol_reserves),
        "realTokenReserves": str(environment.real_token_reserves),
        "complete": environment.complete,
        "isOpen": environment.is_open,
        # The curve's, or the pool's once graduated (the frozen curve stays in the reserves).
        "price": curve.format_price(market_price(environment)),
        "marketCap": str(market_cap(environment)),
        "sequence": environment.sequence,
        "fees": protocol.Fees(
            protocolBps=environment.protocol_fee_bps, creatorBps=environment.creator_fee_bps
        ),
        "launchedBy": environment.launched_by or None,
        "createdAt": millis(environment.created_at),
        "phase": environment.phase,
        "pool": pool_view(environment),
        "limits": protocol.TradingLimits(
            minTradeSol=str(environment.min_trade_lamports),
            maxTradeSol=None
            if environment.max_trade_lamports is None
            else str(environment.max_trade_lamports),
            maxPriceImpactBps=environment.max_price_impact_bps,
            startingBalance=str(environment.starting_sol_balance),
        ),
        "round": environment.round,
        "lastTradeAt": millis(environment.last_trade_at) if environment.last_trade_at else None,
        **analytics,
    }


def environment_summary(
    environment: Environment, *, participants: int, analytics: dict[str, Any] | None = None
) -> protocol.EnvironmentSummary:
    """The environment without chat, trades or balance: the HTTP shape."""
    return protocol.EnvironmentSummary(
        **_summary_fields(environment, participants=participants, analytics=analytics)
    )


def environment_summaries(environments: list[Environment]) -> list[protocol.EnvironmentSummary]:
    """Summaries of a page of environments: one statement reads every environment's analytics
    (grouped subqueries), one presence call their participant counts."""
    counts = presence.backend().counts([environment.id for environment in environments])
    analytics = market_analytics_many(environments, now=timezone.now())
    return [
        environment_summary(
            environment,
            participants=counts.get(environment.id, 0),
            analytics=analytics[environment.id],
        )
        for environment in environments
    ]


def chat_view(message: ChatMessage) -> protocol.ChatMessageView:
    """A chat line as broadcast in ``CHAT_MESSAGE`` and listed in ``chatHistory``."""
    return protocol.ChatMessageView(
        userId=message.wallet,
        message=message.message,
        timestamp=millis(message.created_at),
        id=str(message.pk),
        environmentId=message.environment_id,
        sequence=message.sequence,
    )


def trade_executed_view(trade: Trade) -> protocol.TradeExecuted:
    """The public data of ``VIRTUAL_TRADE_EXECUTED``, as broadcast and as read back later.

    Built without validation (``model_construct``): every trade is announced to its whole
    environment, and the values come from a stored trade, integers already turned into text.
    """
    return protocol.TradeExecuted.model_construct(
        trade=trade_view(trade),
        newReserves=protocol.Reserves.model_construct(
            sol=str(trade.virtual_sol_after), token=str(trade.virtual_token_after)
        ),
        environmentId=trade.environment_id,
        sequence=trade.sequence,
    )


def environment_events(environment_id: str, after: int, upto: int) -> list[Event]:
    """The events with ``after < sequence <= upto``, in order, as they were broadcast (public
    copies): what a server process missed while Redis was down or a process was lost.

    Hidden chat lines are included: they were broadcast before an operator hid them, and a
    sequence number must never go missing.
    """
    trades = Trade.objects.filter(
        environment_id=environment_id, sequence__gt=after, sequence__lte=upto
    )
    chat = ChatMessage.objects.filter(
        environment_id=environment_id, sequence__gt=after, sequence__lte=upto
    )
    market_events = MarketEvent.objects.filter(
        environment_id=environment_id, sequence__gt=after, sequence__lte=upto
    )
    events = [
        Event(environment_id, trade.sequence, "VIRTUAL_TRADE_EXECUTED", trade_executed_view(trade))
        for trade in trades
    ]
    events += [
        Event(environment_id, line.sequence, "CHAT_MESSAGE", chat_view(line)) for line in chat
    ]
    # Graduations and new rounds were stored with their data as broadcast; read back through
    # their declaration, so the frame is the same (fields in declared order).
    events += [
        Event(
            environment_id,
            row.sequence,
            row.kind,
            protocol.SERVER_MESSAGES[row.kind].model_validate(row.data),
        )
        for row in market_events
    ]
    return sorted(events, key=lambda event: event.sequence)


def environment_sequences(environment_ids: list[str]) -> dict[str, int]:
    """Each environment's latest event ``sequence``."""
    return dict(Environment.objects.filter(pk__in=environment_ids).values_list("id", "sequence"))


def balance_view(position: Position) -> protocol.Balance:
    """A participant's balances: in ``ENVIRONMENT_STATE`` and on the trader's own trade copy."""
    return protocol.Balance(sol=str(position.sol_balance), token=str(position.token_balance))


@dataclass(frozen=True, slots=True)
class _History:
    """What every member joining at one sequence is sent alike: the chat and trade history up to
    ``sequence`` and the market's analytics, as read at ``read_at`` (``time.monotonic``)."""

    sequence: int
    round: int
    read_at: float
    chat: list[protocol.ChatMessageView]
    trades: list[protocol.TradeView]
    analytics_at: float  # when the analytics were computed (they may be older than the rest)
    analytics: dict[str, Any]


_HISTORIES: OrderedDict[str, _History] = OrderedDict()
_HISTORIES_LOCK = threading.Lock()
_HISTORIES_KEPT = 1024  # environments whose history a process keeps
ANALYTICS_FRESH = 5.0  # seconds a room's 24 h figures at one sequence are reused at most


def _history(environment: Environment) -> _History:
    """The environment's history up to its ``sequence``, shared by the joins of one moment.

    A crowd joining a room at once reads it once: a history is reused while the environment's
    sequence and round are unchanged (nothing was traded or said meanwhile, so the same events
    are in it) and for at most ``FUNPUMP_STATE_CACHE_SECONDS``, which bounds how stale a chat
    line hidden by an operator in another process can be. The 24 h analytics at one sequence
    change only as their window slides: they are recomputed at most every
    :data:`ANALYTICS_FRESH` seconds (never less often than the history).
    """
    ttl = settings.FUNPUMP_STATE_CACHE_SECONDS
    now = time.monotonic()
    key = str(environment.pk)
    kept = _HISTORIES.get(key)
    if kept is not None and (kept.sequence, kept.round) != (
        environment.sequence,
        environment.round,
    ):
        kept = None  # something happened since: nothing of it is reused
    if kept is not None and now - kept.read_at < ttl:
        return kept
    analytics_at, analytics = now, None
    if kept is not None and now - kept.analytics_at < max(ttl, ANALYTICS_FRESH):
        analytics_at, analytics = kept.analytics_at, kept.analytics
    upto = environment.sequence
    chat = ChatMessage.objects.filter(
        environment=environment, hidden=False, sequence__lte=upto
    ).order_by("-sequence")
    history = _History(
        sequence=upto,
        round=environment.round,
        read_at=now,
        chat=[chat_view(message) for message in reversed(chat[:HISTORY_SIZE])],
        trades=[
            trade_view(trade)
            for trade in trades_recent(environment.id, upto=upto, round_=environment.round)
        ],
        analytics_at=analytics_at,
        analytics=(
            market_analytics(environment, now=timezone.now()) if analytics is None else analytics
        ),
    )
    if ttl > 0:
        with _HISTORIES_LOCK:
            _HISTORIES[key] = history
            _HISTORIES.move_to_end(key)
            while len(_HISTORIES) > _HISTORIES_KEPT:
                _HISTORIES.popitem(last=False)
    return history


def history_forget(environment_ids: Iterable[str] | None = None) -> None:
    """Drop this process's kept histories (of ``environment_ids``, else all): an operator hid or
    showed chat lines, so the next join reads them again."""
    with _HISTORIES_LOCK:
        if environment_ids is None:
            _HISTORIES.clear()
        for environment_id in environment_ids or ():
            _HISTORIES.pop(str(environment_id), None)


def environment_state(
    environment: Environment, position: Position, *, participants: int | None = None
) -> protocol.EnvironmentState:
    """``ENVIRONMENT_STATE`` for one participant: everything up to ``environment.sequence``.

    The history stops at the sequence read with the environment row, so the state and the
    broadcasts that follow it never overlap. ``participants``: the count when the caller has it
    already (a join gets it from marking the wallet present), else it is read.
    """
    # Filtering on the sequence keeps events committed after the row was read out of the state:
    # the member receives those as broadcasts instead.
    history = _history(environment)
    market = market_snapshot(environment.token_mint)
    return protocol.EnvironmentState(
        **_summary_fields(
            environment,
            participants=presence.backend().count(environment.id)
            if participants is None
            else participants,
            analytics=history.analytics,
        ),
        chatHistory=history.chat,
        trades=history.trades,
        balance=balance_view(position),
        marketPrice=market["price"] if market else None,
    )


def price_target(*, mint: str, environment_id: str | None) -> str:
    """The environment whose market prices ``mint`` for a ``SUBSCRIBE_PRICE``: the one asked for,
    else the most recently created one open for trading (not closed; on its pool, or on a curve
    not complete)."""
    if environment_id is not None:
        environment = environment_get(environment_id)
        if environment is None:
            raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found")
        if environment.token_mint != mint:
            raise DomainError(
                ErrorCode.INVALID_MESSAGE,
                "mintAddress is not this environment's tokenMint",
                {"field": "mintAddress", "tokenMint": environment.token_mint},
            )
        return environment.id
    latest = (
        # A graduated market trades on its pool; a complete curve that never migrated (one
        # completed before graduation existed) takes no trades: its price is history.
        Environment.objects.filter(
            Q(real_token_reserves__gt=0) | Q(phase=Phase.POOL), token_mint=mint, is_open=True
        )
        .order_by("-created_at")
        .values_list("id", flat=True)
        .first()
    )
    if latest is None:
        raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "no open environment carries this mint")
    return latest


def price_update(*, environment_id: str) -> protocol.PriceUpdate:
    """The data of a ``PRICE_UPDATE`` for an environment's market (its curve, or its pool once
    graduated), as of now: one statement, the 24 h volume of the current round read with the
    environment row."""
    now = timezone.now()
    environment = Environment.objects.annotate(volume24h=volume_expression(now)).get(
        pk=environment_id
    )
    return protocol.PriceUpdate(
        mintAddress=environment.token_mint,
        price=curve.format_price(market_price(environment)),
        volume=str(environment.volume24h),
        timestamp=millis(now),
        environmentId=environment.id,
        marketCap=str(market_cap(environment)),
        phase="pool" if environment.phase == Phase.POOL else "curve",
        pool=pool_view(environment),
        progress=progress(environment),
    )
