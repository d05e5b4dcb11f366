"""The market feed: PumpPortal trade messages, the 24 h volume, and a replayed stream."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.server import serve

from environments.services import generate_mint
from trading import curve
from trading.market import VOLUME_WINDOW_MS, MarketBook, parse_trade, run_feed

MINT = generate_mint()
OTHER = generate_mint()


def trade_message(mint: str = MINT, **changes) -> str:
    """A trade in the format of PumpPortal's data WebSocket (subscribeTokenTrade)."""
    message = {
        "signature": "5hVd1yvrNxJbWzQ4rJQW7H3kFkqmSoX2c9f8oXHXG3YwD6p5nQ8xu8bY3T3K2mL7sZ",
        "mint": mint,
        "traderPublicKey": generate_mint(),
        "txType": "buy",
        "tokenAmount": 35217123.451273,
        "solAmount": 1.0,
        "newTokenBalance": 35217123.451273,
        "bondingCurveKey": generate_mint(),
        "vTokensInBondingCurve": 1037782876.548727,
        "vSolInBondingCurve": 31.018,
        "marketCapSol": 29.88912,
        "pool": "pump",
    }
    message.update(changes)
    return json.dumps(message)


def test_a_trade_message_becomes_integer_units():
    tick = parse_trade(trade_message(), now_ms=1_000)
    assert tick is not None
    assert tick.virtual_sol == 31_018_000_000
    assert tick.virtual_token == 1_037_782_876_548_727
    assert tick.sol_amount == 1_000_000_000
    assert tick.is_buy is True


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"message": "Successfully subscribed to keys."}',
        "[1, 2, 3]",
        trade_message(txType="mint"),
        trade_message(mint=7),
        trade_message(vSolInBondingCurve="lots"),
        trade_message(vSolInBondingCurve=-3),
        trade_message(vTokensInBondingCurve=0),
        trade_message(solAmount=None),
        trade_message(solAmount=True),
        trade_message(vSolInBondingCurve=1e300),
        "[" * 10_000,
    ],
)
def test_anything_else_is_skipped(text):
    assert parse_trade(text) is None


def test_the_book_prices_like_the_curve_and_keeps_24_hours_of_volume():
    book = MarketBook()
    first = book.apply(parse_trade(trade_message(), now_ms=0))
    expected = curve.Curve(virtual_sol=31_018_000_000, virtual_token=1_037_782_876_548_727)
    assert first["price"] == curve.format_price(expected.spot_price)
    assert first["marketCap"] == str(expected.market_cap)
    assert first["volume"] == "1000000000"
    second = book.apply(parse_trade(trade_message(solAmount=0.5), now_ms=3_600_000))
    assert second["volume"] == "1500000000"
    later = book.update(MINT, now_ms=VOLUME_WINDOW_MS + 1)  # the first trade is 24 h old
    assert later["volume"] == "500000000"
    assert book.update(OTHER, now_ms=0) is None


@pytest.mark.asyncio
async def test_the_feed_subscribes_skips_junk_survives_a_drop_and_resubscribes():
    connections: list[list[dict]] = []

    async def replay(socket):
        received: list[dict] = []
        connections.append(received)
        received.append(json.loads(await socket.recv()))  # the subscription
        await socket.send('{"message": "Successfully subscribed to keys."}')
        if len(connections) == 1:
            await socket.send("{broken")
            await socket.send(trade_message(mint=OTHER))  # not subscribed: ignored
            await socket.send(trade_message(solAmount=2.0))
            await asyncio.sleep(0.05)
            return  # the server drops the connection
        await socket.send(trade_message(solAmount=0.25, vSolInBondingCurve=33.5))
        await asyncio.sleep(5)

    server = await serve(replay, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    updates: list[dict] = []

    async def wanted() -> set[str]:
        return {MINT}

    async def publish(update: dict) -> None:
        updates.append(update)

    feed = asyncio.create_task(
        run_feed(url, wanted=wanted, publish=publish, poll=0.05, first_backoff=0.05)
    )
    async with asyncio.timeout(10):
        while len(updates) < 2:
            await asyncio.sleep(0.02)
    feed.cancel()
    server.close()

    assert [c[0] for c in connections] == [{"method": "subscribeTokenTrade", "keys": [MINT]}] * 2
    assert [update["mintAddress"] for update in updates] == [MINT, MINT]
    assert updates[0]["volume"] == "2000000000"
    assert updates[1]["volume"] == "2250000000"  # the book survives the reconnection
    assert updates[1]["price"] != updates[0]["price"]


@pytest.mark.asyncio
async def test_the_feed_follows_interest_as_it_changes():
    received: list[dict] = []
    interest = {MINT}

    async def replay(socket):
        async for raw in socket:
            received.append(json.loads(raw))

    server = await serve(replay, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def wanted() -> set[str]:
        return set(interest)

    async def publish(update: dict) -> None:
        pass

    feed = asyncio.create_task(run_feed(url, wanted=wanted, publish=publish, poll=0.02))
    async with asyncio.timeout(5):
        while not received:
            await asyncio.sleep(0.01)
        interest.clear()
        interest.add(OTHER)
        while len(received) < 3:
            await asyncio.sleep(0.01)
    feed.cancel()
    server.close()
    assert received == [
        {"method": "subscribeTokenTrade", "keys": [MINT]},
        {"method": "subscribeTokenTrade", "keys": [OTHER]},
        {"method": "unsubscribeTokenTrade", "keys": [MINT]},
    ]
