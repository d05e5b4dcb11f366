"""Market prices of real mints from a pump.fun trade stream (PumpPortal's data WebSocket).

PumpPortal sends one JSON object per trade after ``{"method": "subscribeTokenTrade", "keys":
[mints]}``. The fields used here: ``mint``, ``txType`` ("buy"/"sell"), ``solAmount`` and
``tokenAmount`` (whole SOL and tokens, as JSON numbers), ``vSolInBondingCurve`` and
``vTokensInBondingCurve`` (the curve's virtual reserves after the trade, whole units) and
``marketCapSol``. Numbers are read through their decimal text into lamports and raw units, so
the rest of the system stays in integers; the price comes from the same curve math as the
virtual environments.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import websockets
from django.conf import settings

import protocol
from environments import presence
from kernel import redis as shared_redis
from kernel.breaker import redis_breaker
from trading import curve

logger = logging.getLogger(__name__)

VOLUME_WINDOW_MS = 24 * 3600 * 1000
MAX_SOL_LAMPORTS = 10**18  # anything larger is not a real trade


@dataclass(frozen=True, slots=True)
class MarketTick:
    """One trade of a real mint, in integer units."""

    mint: str
    virtual_sol: int
    virtual_token: int
    sol_amount: int
    is_buy: bool
    timestamp_ms: int


def _units(value: Any, scale: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value)) * scale
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0 or amount > MAX_SOL_LAMPORTS * 10**3:
        return None
    return int(amount)


def parse_trade(text: str | bytes, *, now_ms: int | None = None) -> MarketTick | None:
    """A trade message as a tick; None for anything else (acknowledgements, junk)."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get("txType") not in {"buy", "sell"}:
        return None
    mint = message.get("mint")
    virtual_sol = _units(message.get("vSolInBondingCurve"), curve.LAMPORTS_PER_SOL)
    virtual_token = _units(message.get("vTokensInBondingCurve"), curve.RAW_PER_TOKEN)
    sol_amount = _units(message.get("solAmount"), curve.LAMPORTS_PER_SOL)
    if not isinstance(mint, str) or not 32 <= len(mint) <= 44:
        return None
    if not virtual_sol or not virtual_token or sol_amount is None:
        return None
    return MarketTick(
        mint=mint,
        virtual_sol=virtual_sol,
        virtual_token=virtual_token,
        sol_amount=sol_amount,
        is_buy=message["txType"] == "buy",
        timestamp_ms=now_ms if now_ms is not None else int(time.time() * 1000),
    )


@dataclass(slots=True)
class _MintState:
    tick: MarketTick
    trades: deque[tuple[int, int]] = field(default_factory=deque)  # (timestamp ms, lamports)
    volume: int = 0


class MarketBook:
    """Latest price and running 24 h volume of every mint the feed has seen."""

    def __init__(self) -> None:
        self._mints: dict[str, _MintState] = {}

    def apply(self, tick: MarketTick) -> dict[str, Any]:
        """Record a tick; return the ``PRICE_UPDATE`` data for its mint."""
        state = self._mints.get(tick.mint)
        if state is None:
            state = self._mints[tick.mint] = _MintState(tick=tick)
        state.tick = tick
        state.trades.append((tick.timestamp_ms, tick.sol_amount))
        state.volume += tick.sol_amount
        return self.update(tick.mint, now_ms=tick.timestamp_ms) or {}

    def update(self, mint: str, *, now_ms: int) -> dict[str, Any] | None:
        """The mint's ``PRICE_UPDATE`` data as of ``now_ms`` (built from the protocol's model), or
        None if it was never traded."""
        state = self._mints.get(mint)
        if state is None:
            return None
        while state.trades and state.trades[0][0] <= now_ms - VOLUME_WINDOW_MS:
            state.volume -= state.trades.popleft()[1]
        reserves = curve.Curve(
            virtual_sol=state.tick.virtual_sol, virtual_token=state.tick.virtual_token
        )
        update = protocol.PriceUpdate(
            mintAddress=mint,
            price=curve.format_price(reserves.spot_price),
            volume=str(state.volume),
            timestamp=now_ms,
            marketCap=str(reserves.market_cap),
        )
        # Plain JSON values: the update crosses the channel layer and Redis as it is.
        return protocol.dump(update)


async def run_feed(
    url: str,
    *,
    wanted: Callable[[], Awaitable[set[str]]],
    publish: Callable[[dict[str, Any]], Awaitable[None]],
    book: MarketBook | None = None,
    poll: float = 1.0,
    first_backoff: float = 1.0,
    max_backoff: float = 30.0,
) -> None:
    """Follow the trade stream forever: subscribe to the mints ``wanted()`` names (re-read every
    ``poll`` seconds), ``publish`` a ``PRICE_UPDATE`` per trade, reconnect with exponential
    backoff when the connection drops. Malformed messages are counted and skipped. Cancel the
    task to stop it."""
    book = book or MarketBook()
    delay = first_backoff
    while True:
        try:
            async with websockets.connect(url, max_size=2**20, open_timeout=10) as socket:
                logger.info("market feed connected")
                delay = first_backoff
                subscribed: set[str] = set()
                follow = asyncio.create_task(_follow_interest(socket, wanted, subscribed, poll))
                try:
                    skipped = 0
                    async for raw in socket:
                        tick = parse_trade(raw)
                        if tick is None or tick.mint not in subscribed:
                            skipped += 1
                            continue
                        await publish(book.apply(tick))
                finally:
                    follow.cancel()
                logger.warning("market feed closed the connection (%s skipped)", skipped)
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            logger.warning("market feed unavailable: %r", exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff)


async def _follow_interest(
    socket: Any, wanted: Callable[[], Awaitable[set[str]]], subscribed: set[str], poll: float
) -> None:
    while True:
        try:
            mints = await wanted()
        except Exception as exc:
            logger.warning("could not read which mints are wanted: %r", exc)
            mints = subscribed
        added, dropped = sorted(mints - subscribed), sorted(subscribed - mints)
        if added:
            await socket.send(json.dumps({"method": "subscribeTokenTrade", "keys": added}))
            subscribed.update(added)
        if dropped:
            await socket.send(json.dumps({"method": "unsubscribeTokenTrade", "keys": dropped}))
            subscribed.difference_update(dropped)
        await asyncio.sleep(poll)


# --- shared state: who wants which mint, and each mint's latest update ---------------------------

MARKET_INTEREST = "market-interest"  # presence key: (connection, mint) entries
SNAPSHOT_TTL = 24 * 3600


def snapshot_key(mint: str) -> str:
    return f"{settings.FUNPUMP_REDIS_PREFIX}:market:{mint}"


def market_interest_add(*, mint: str, connection: str) -> None:
    """A connection wants ``mint``'s market price: the feed process will follow it."""
    presence.backend().add(MARKET_INTEREST, connection, mint)


def market_interest_remove(*, mint: str, connection: str) -> None:
    presence.backend().remove(MARKET_INTEREST, connection, mint)


def market_interest() -> set[str]:
    """Every mint some connection on some server process wants a market price for."""
    return presence.backend().members(MARKET_INTEREST)


async def market_snapshot_store(update: dict[str, Any]) -> None:
    """Keep ``update`` as its mint's latest, for the next joins and subscriptions (the feed
    process, which needs Redis)."""
    client = shared_redis.async_client(settings.REDIS_URL)
    await client.set(snapshot_key(update["mintAddress"]), json.dumps(update), ex=SNAPSHOT_TTL)


def market_snapshot(mint: str) -> dict[str, Any] | None:
    """The feed's latest ``PRICE_UPDATE`` data for ``mint``, if it has seen a trade.

    Only with a market feed configured: without one nothing writes snapshots, and a join asks
    Redis nothing for its ``marketPrice``.
    """
    if not settings.FUNPUMP_MARKET_FEED_URL or not settings.REDIS_URL:
        return None
    if not redis_breaker.should_try():
        return None  # Redis is down (logged once by the breaker): the price is unknown for now
    try:
        snapshot = shared_redis.sync_client(settings.REDIS_URL).get(snapshot_key(mint))
    except Exception as exc:
        redis_breaker.failed(exc)
        return None
    redis_breaker.succeeded()
    return json.loads(snapshot) if snapshot is not None else None
