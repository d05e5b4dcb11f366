"""SUBSCRIBE_PRICE / PRICE_UPDATE: snapshot, updates after trades, coalescing, unsubscribe."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

import protocol
from environments.models import Environment
from environments.selectors import price_update
from environments.services import environment_create, generate_mint
from tests.conftest import Wallet, open_socket
from tests.trading.history import Clock, trade_at
from trading.curve import DEFAULT_STARTING_SOL
from trading.selectors import volume_24h
from trading.state import CurveConstants

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(socket, frame: dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps(frame))
    return json.loads(await socket.receive_from(timeout=5))


async def drain(socket, quiet: float) -> list[dict[str, Any]]:
    """Everything the socket receives until it has been quiet for ``quiet`` seconds."""
    messages = []
    while not await socket.receive_nothing(timeout=quiet):
        messages.append(json.loads(await socket.receive_from()))
    return messages


def subscribe(environment, **extra) -> dict[str, Any]:
    data = {"mintAddress": environment.token_mint, "environmentId": environment.id, **extra}
    return {"type": "SUBSCRIBE_PRICE", "data": data}


async def trader(wallet: Wallet, environment) -> Any:
    socket = await open_socket(wallet)
    join = {"environmentId": environment.id, "userId": wallet.address}
    reply = await ask(socket, {"type": "JOIN_ENVIRONMENT", "data": join})
    assert reply["type"] == "ENVIRONMENT_STATE"
    return socket


def buy(environment, amount: str = "1000000000") -> dict[str, Any]:
    return {
        "type": "VIRTUAL_TRADE",
        "data": {"environmentId": environment.id, "amount": amount, "isBuy": True},
    }


async def test_an_anonymous_subscriber_gets_a_snapshot_then_an_update_after_a_trade(
    environment, alice
):
    watcher = await open_socket()
    snapshot = await ask(watcher, {**subscribe(environment), "requestId": "p1"})
    assert snapshot["type"] == "PRICE_UPDATE"
    assert snapshot["requestId"] == "p1"
    protocol.PriceUpdate.model_validate(snapshot["data"])
    assert snapshot["data"]["price"] == "0.000000027958993476234855545"
    assert snapshot["data"]["volume"] == "0"
    assert snapshot["data"]["marketCap"] == "27958993476"
    assert snapshot["data"]["mintAddress"] == environment.token_mint

    socket = await trader(alice, environment)
    traded = await ask(socket, buy(environment))
    update = json.loads(await watcher.receive_from(timeout=2))
    assert update["type"] == "PRICE_UPDATE"
    assert "requestId" not in update
    assert update["data"]["volume"] == traded["data"]["trade"]["solAmount"] == "987654320"
    assert update["data"]["price"].startswith("0.0000000298302")
    assert update["data"]["timestamp"] >= snapshot["data"]["timestamp"]
    await watcher.disconnect()
    await socket.disconnect()


async def test_rapid_trades_are_coalesced_and_the_last_update_is_final(environment, alice):
    watcher = await open_socket()
    await ask(watcher, subscribe(environment))
    socket = await trader(alice, environment)
    batch = [buy(environment, "100000000")["data"]] * 20
    await socket.send_to(text_data=json.dumps({"type": "VIRTUAL_TRADE", "data": batch}))
    replies = [json.loads(await socket.receive_from(timeout=5)) for _ in range(20)]
    assert {reply["type"] for reply in replies} == {"VIRTUAL_TRADE_EXECUTED"}
    updates = await drain(watcher, 0.4)
    assert 1 <= len(updates) < 20
    final = await sync_to_async(price_update)(environment_id=environment.id)
    assert updates[-1]["data"]["price"] == final.price
    total = sum(int(reply["data"]["trade"]["solAmount"]) for reply in replies)
    assert updates[-1]["data"]["volume"] == str(total)
    await watcher.disconnect()
    await socket.disconnect()


async def test_unsubscribe_stops_the_updates(environment, alice):
    watcher = await open_socket()
    await ask(watcher, subscribe(environment))
    await watcher.send_to(
        text_data=json.dumps({"type": "UNSUBSCRIBE_PRICE", "data": subscribe(environment)["data"]})
    )
    socket = await trader(alice, environment)
    await ask(socket, buy(environment))
    assert await watcher.receive_nothing(timeout=0.4)
    await watcher.disconnect()
    await socket.disconnect()


async def test_without_an_environment_the_latest_open_environment_of_the_mint_prices_it():
    mint = generate_mint()
    older = await sync_to_async(environment_create)(name="Old", token_mint=mint)
    newer = await sync_to_async(environment_create)(name="New", token_mint=mint)
    await sync_to_async(environment_create)(name="Closed", token_mint=mint, is_open=False)
    watcher = await open_socket()
    reply = await ask(watcher, {"type": "SUBSCRIBE_PRICE", "data": {"mintAddress": mint}})
    assert reply["data"]["environmentId"] == newer.id != older.id
    await watcher.disconnect()


async def test_without_an_environment_a_graduated_market_prices_the_mint_from_its_pool(alice):
    mint = generate_mint()
    await sync_to_async(environment_create)(name="Still trading", token_mint=mint)
    unlimited = CurveConstants(max_trade_lamports=None)
    newer = await sync_to_async(environment_create)(
        name="Graduated", token_mint=mint, constants=unlimited
    )
    socket = await trader(alice, newer)
    bought = await ask(socket, buy(newer, amount=str(DEFAULT_STARTING_SOL)))  # the whole curve
    assert bought["type"] == "VIRTUAL_TRADE_EXECUTED"
    graduated = json.loads(await socket.receive_from(timeout=5))
    assert graduated["type"] == "MARKET_GRADUATED"
    pool = graduated["data"]["pool"]
    watcher = await open_socket()
    reply = await ask(watcher, {"type": "SUBSCRIBE_PRICE", "data": {"mintAddress": mint}})
    assert reply["type"] == "PRICE_UPDATE"
    assert reply["data"]["environmentId"] == newer.id  # its pool still trades
    assert reply["data"]["phase"] == "pool"
    assert reply["data"]["pool"] == pool
    sol, tokens = int(pool["solReserves"]), int(pool["tokenReserves"])
    price = Decimal(reply["data"]["price"])
    assert abs(price - Decimal(sol) / 10**9 / (Decimal(tokens) / 10**6)) <= price * Decimal("1e-19")
    assert reply["data"]["marketCap"] == str(sol * 10**15 // tokens)
    await watcher.disconnect()
    await socket.disconnect()


async def test_without_an_environment_a_complete_unmigrated_curve_never_prices_the_mint():
    # A curve completed before graduation existed stays complete on its curve: no trades.
    mint = generate_mint()
    older = await sync_to_async(environment_create)(name="Still trading", token_mint=mint)
    legacy = await sync_to_async(environment_create)(name="Bought out", token_mint=mint)
    await sync_to_async(Environment.objects.filter(pk=legacy.pk).update)(real_token_reserves=0)
    watcher = await open_socket()
    reply = await ask(watcher, {"type": "SUBSCRIBE_PRICE", "data": {"mintAddress": mint}})
    assert reply["data"]["environmentId"] == older.id
    # With no open market left for the mint, there is nothing to price it.
    only = await sync_to_async(environment_create)(name="Alone", token_mint=generate_mint())
    await sync_to_async(Environment.objects.filter(pk=only.pk).update)(real_token_reserves=0)
    refused = await ask(
        watcher, {"type": "SUBSCRIBE_PRICE", "data": {"mintAddress": only.token_mint}}
    )
    assert refused["type"] == "ERROR"
    assert refused["data"]["code"] == "ENVIRONMENT_NOT_FOUND"
    # Named explicitly, the complete curve still answers with its final price.
    named = await ask(watcher, subscribe(only))
    assert named["type"] == "PRICE_UPDATE" and named["data"]["environmentId"] == only.id
    assert named["data"]["phase"] == "curve" and "pool" not in named["data"]
    await watcher.disconnect()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"environmentId": "env_nowhere"}, "ENVIRONMENT_NOT_FOUND"),
        ({"mintAddress": "11111111111111111111111111111111"}, "INVALID_MESSAGE"),  # not its mint
        ({"mintAddress": "not-a-mint"}, "INVALID_MESSAGE"),
        ({"environmentId": None, "mintAddress": generate_mint()}, "ENVIRONMENT_NOT_FOUND"),
    ],
)
async def test_subscription_errors(environment, data, code):
    watcher = await open_socket()
    frame = subscribe(environment)
    frame["data"] = {**frame["data"], **data}
    reply = await ask(watcher, frame)
    assert reply["type"] == "ERROR"
    assert reply["data"]["code"] == code
    await watcher.disconnect()


async def test_subscriptions_per_connection_are_bounded(settings, environment):
    settings.FUNPUMP_MAX_SUBSCRIPTIONS = 1
    watcher = await open_socket()
    assert (await ask(watcher, subscribe(environment)))["type"] == "PRICE_UPDATE"
    again = await ask(watcher, subscribe(environment))  # the same one again is fine
    assert again["type"] == "PRICE_UPDATE"
    other = await sync_to_async(environment_create)(name="Other")
    refused = await ask(watcher, subscribe(other))
    assert refused["data"]["code"] == "INVALID_MESSAGE"
    await watcher.disconnect()


@pytest.mark.django_db
def test_the_24h_volume_drops_trades_exactly_24_hours_old(environment, alice, monkeypatch):
    now = timezone.now().replace(second=30, microsecond=0)
    clock = Clock(monkeypatch, now)
    ages = {
        "too old": timedelta(hours=24, seconds=10),
        "edge minute, inside": timedelta(hours=24) - timedelta(seconds=10),
        "an hour ago": timedelta(hours=1),
        "just now": timedelta(seconds=1),
    }
    amounts = {}
    for label, age in ages.items():  # oldest first: the trades write their minutes' candles
        trade = trade_at(clock, now - age, environment.id, alice.address, 10**9, is_buy=True)
        amounts[label] = trade.sol_amount
    expected = sum(amount for label, amount in amounts.items() if label != "too old")
    assert volume_24h(environment.id, now=now) == expected
    later = now + timedelta(minutes=61)  # the hour-old trade is still in, the edge one is out
    expected_later = amounts["an hour ago"] + amounts["just now"]
    assert volume_24h(environment.id, now=later) == expected_later
    clock.moment = later
    assert price_update(environment_id=environment.id).volume == str(expected_later)
