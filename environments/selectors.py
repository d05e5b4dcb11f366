"""Read-side of environments: the shapes of ENVIRONMENT_STATE and the HTTP API."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

import protocol
from environments import presence
from environments.models import ChatMessage, Environment, Position
from kernel.clock import millis
from kernel.realtime import Event
from protocol.errors import DomainError, ErrorCode
from trading import curve
from trading.market import market_snapshot
from trading.models import Trade
from trading.selectors import trade_view, trades_recent, volume_24h

HISTORY_SIZE = 50


def environment_get(environment_id: str) -> Environment | None:
    return Environment.objects.filter(pk=environment_id).first()


def environment_list() -> QuerySet[Environment]:
    return Environment.objects.order_by("-created_at", "id")


def _summary_fields(environment: Environment, *, participants: int) -> dict[str, Any]:
    state = environment.curve
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
        "price": curve.format_price(state.spot_price),
        "marketCap": str(state.market_cap),
        "sequence": environment.sequence,
        "fees": protocol.Fees(
            protocolBps=environment.protocol_fee_bps, creatorBps=environment.creator_fee_bps
        ),
        "launchedBy": environment.launched_by or None,
        "createdAt": millis(environment.created_at),
    }


def environment_summary(
    environment: Environment, *, participants: int
) -> protocol.EnvironmentSummary:
    """The environment without chat, trades or balance: the HTTP shape."""
    return protocol.EnvironmentSummary(**_summary_fields(environment, participants=participants))


def environment_summaries(environments: list[Environment]) -> list[protocol.EnvironmentSummary]:
    counts = presence.backend().counts([environment.id for environment in environments])
    return [
        environment_summary(environment, participants=counts.get(environment.id, 0))
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
    events = [
        Event(environment_id, trade.sequence, "VIRTUAL_TRADE_EXECUTED", trade_executed_view(trade))
        for trade in trades
    ]
    events += [
        Event(environment_id, line.sequence, "CHAT_MESSAGE", chat_view(line)) for line in chat
    ]
    return sorted(events, key=lambda event: event.sequence)


def environment_sequences(environment_ids: list[str]) -> dict[str, int]:
    """Each environment's latest event ``sequence``."""
    return dict(Environment.objects.filter(pk__in=environment_ids).values_list("id", "sequence"))


def balance_view(position: Position) -> protocol.Balance:
    """A participant's balances: in ``ENVIRONMENT_STATE`` and on the trader's own trade copy."""
    return protocol.Balance(sol=str(position.sol_balance), token=str(position.token_balance))


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
    upto = environment.sequence
    chat = ChatMessage.objects.filter(
        environment=environment, hidden=False, sequence__lte=upto
    ).order_by("-sequence")
    market = market_snapshot(environment.token_mint)
    return protocol.EnvironmentState(
        **_summary_fields(
            environment,
            participants=presence.backend().count(environment.id)
            if participants is None
            else participants,
        ),
        chatHistory=[chat_view(message) for message in reversed(chat[:HISTORY_SIZE])],
        trades=[trade_view(trade) for trade in trades_recent(environment.id, upto=upto)],
        balance=balance_view(position),
        marketPrice=market["price"] if market else None,
    )


def price_target(*, mint: str, environment_id: str | None) -> str:
    """The environment whose curve prices ``mint`` for a ``SUBSCRIBE_PRICE``: the one asked for,
    else the most recently created one open for trading (not closed, its curve not complete)."""
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
        # A complete curve (no real tokens left) takes no trades: its price is history.
        Environment.objects.filter(token_mint=mint, is_open=True, real_token_reserves__gt=0)
        .order_by("-created_at")
        .values_list("id", flat=True)
        .first()
    )
    if latest is None:
        raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "no open environment carries this mint")
    return latest


def price_update(*, environment_id: str) -> protocol.PriceUpdate:
    """The data of a ``PRICE_UPDATE`` for an environment's curve, as of now."""
    environment = Environment.objects.get(pk=environment_id)
    state = environment.curve
    now = timezone.now()
    return protocol.PriceUpdate(
        mintAddress=environment.token_mint,
        price=curve.format_price(state.spot_price),
        volume=str(volume_24h(environment.id, now=now)),
        timestamp=millis(now),
        environmentId=environment.id,
        marketCap=str(state.market_cap),
    )
