"""End to end: real daphne, real sockets, real wallet sign-in."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from django.db.models import Sum
from nacl.signing import SigningKey

from environments.models import ChatMessage, Environment, Position
from environments.services import environment_create
from gateway.client import FunPumpClient, sign_in, wallet_of
from trading.models import MarketEvent, Trade
from trading.state import Phase
from wallets.services import token_issue

pytestmark = pytest.mark.asyncio


class Recorder:
    """Collects every message a client receives."""

    def __init__(self, client: FunPumpClient) -> None:
        self.messages: list[dict[str, Any]] = []
        client.on("*", self.messages.append)

    def of_type(self, message_type: str) -> list[dict[str, Any]]:
        return [message for message in self.messages if message["type"] == message_type]

    async def wait_for(self, count: int, message_type: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.of_type(message_type)) < count:
                await asyncio.sleep(0.02)


async def signed_in_client(server: Any, key: SigningKey) -> FunPumpClient:
    token = await sign_in(server.http, key)
    client = FunPumpClient(server.ws, token=token, origin=server.http)
    await client.connect()
    return client


async def test_two_wallets_see_each_others_trades_and_chat(daphne_server):
    environment = await sync_to_async(environment_create)(name="E2E room")
    server = await sync_to_async(daphne_server)()
    alice_key, bob_key = SigningKey.generate(), SigningKey.generate()
    alice = await signed_in_client(server, alice_key)
    bob = await signed_in_client(server, bob_key)
    alice_seen, bob_seen = Recorder(alice), Recorder(bob)

    state = await alice.join(environment.id, wallet_of(alice_key))
    assert state["type"] == "ENVIRONMENT_STATE"
    state = await bob.join(environment.id, wallet_of(bob_key))
    assert state["data"]["participants"] == 2

    reply = await alice.request(
        "VIRTUAL_TRADE", {"environmentId": environment.id, "amount": "1000000000", "isBuy": True}
    )
    assert reply["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert reply["requestId"].startswith("r")
    assert reply["data"]["trade"]["tokenAmount"] == "34199203154141"
    assert reply["data"]["balance"]["token"] == "34199203154141"

    said = await bob.request("CHAT_MESSAGE", {"environmentId": environment.id, "message": "gm"})
    assert said["type"] == "CHAT_MESSAGE"
    assert said["data"]["sequence"] == 2

    await bob_seen.wait_for(1, "VIRTUAL_TRADE_EXECUTED")
    await alice_seen.wait_for(1, "CHAT_MESSAGE")
    await asyncio.sleep(0.3)  # anything extra would arrive by now
    bob_trade = bob_seen.of_type("VIRTUAL_TRADE_EXECUTED")
    assert len(bob_trade) == 1
    assert bob_trade[0]["data"]["trade"]["userId"] == wallet_of(alice_key)
    assert "requestId" not in bob_trade[0]
    assert "balance" not in bob_trade[0]["data"]
    # The trader gets exactly one copy of its own trade: the reply carrying its requestId.
    assert len(alice_seen.of_type("VIRTUAL_TRADE_EXECUTED")) == 1
    assert alice_seen.of_type("CHAT_MESSAGE")[0]["data"]["message"] == "gm"
    assert alice_seen.of_type("CHAT_MESSAGE")[0]["data"]["userId"] == wallet_of(bob_key)
    await alice.close()
    await bob.close()


async def test_the_server_refuses_bad_tokens_and_foreign_origins(daphne_server):
    server = await sync_to_async(daphne_server)()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.ws, additional_headers={"Authorization": "Bearer forged"})
    assert refused.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.ws, origin="https://elsewhere.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    async with websockets.connect(server.ws, origin=server.http) as anonymous:  # type: ignore[arg-type]
        await anonymous.send(json.dumps({"type": "HEARTBEAT", "requestId": "x"}))
        reply = json.loads(await anonymous.recv())
        assert reply["type"] == "HEARTBEAT"
        assert reply["requestId"] == "x"


@pytest.mark.timeout(240)
async def test_concurrent_traders_lose_nothing_and_conserve_sol_and_tokens(postgres, daphne_server):
    """20 wallets fire 25 random trades each at once against one environment."""
    wallets, trades_each = 20, 25
    environment = await sync_to_async(environment_create)(name="Stampede")
    server = await sync_to_async(daphne_server)()
    keys = [SigningKey.generate() for _ in range(wallets)]
    clients = await asyncio.gather(*(signed_in_client(server, key) for key in keys))
    recorders = [Recorder(client) for client in clients]
    for client, key in zip(clients, keys, strict=True):
        await client.join(environment.id, wallet_of(key))

    outcomes: Counter[str] = Counter()

    async def trade_randomly(index: int) -> None:
        client, rng = clients[index], random.Random(index)
        tokens = 0
        for _ in range(trades_each):
            if tokens and rng.random() < 0.4:
                amount, is_buy = str(max(1, tokens * rng.randint(1, 100) // 100)), False
            else:
                amount, is_buy = str(rng.randint(1, 3 * 10**9)), True
            reply = await client.request(
                "VIRTUAL_TRADE",
                {"environmentId": environment.id, "amount": amount, "isBuy": is_buy},
                timeout=60,
            )
            if reply["type"] == "VIRTUAL_TRADE_EXECUTED":
                tokens = int(reply["data"]["balance"]["token"])
                outcomes["executed"] += 1
            else:
                outcomes[reply["data"]["code"]] += 1

    await asyncio.gather(*(trade_randomly(index) for index in range(wallets)))
    executed = outcomes["executed"]
    assert sum(outcomes.values()) == wallets * trades_each
    assert executed > wallets * trades_each * 0.8, outcomes

    def ledger() -> dict[str, Any]:
        refreshed = Environment.objects.get(pk=environment.id)
        positions = Position.objects.filter(environment=refreshed)
        trades = Trade.objects.filter(environment=refreshed)
        return {
            "environment": refreshed,
            "sequences": sorted(trades.values_list("sequence", flat=True)),
            "trades": trades.count(),
            "chat": ChatMessage.objects.filter(environment=refreshed).count(),
            "sol": positions.aggregate(total=Sum("sol_balance"))["total"],
            "tokens": positions.aggregate(total=Sum("token_balance"))["total"],
            "fees": sum(trade.fee for trade in trades),
            # The LP fee stays in the pool; the protocol's and the creator's leave the market.
            "fees_out": sum(trade.protocol_fee + trade.creator_fee for trade in trades),
            "events": list(
                MarketEvent.objects.filter(environment=refreshed).values_list("sequence", flat=True)
            ),
            "negative": positions.filter(sol_balance__lt=0).count()
            + positions.filter(token_balance__lt=0).count(),
            "positions": positions.count(),
        }

    book = await sync_to_async(ledger)()
    refreshed = book["environment"]
    assert book["trades"] == executed  # nothing lost, nothing doubled
    # The trades and, when the buying completed the curve, its graduation: one gapless sequence.
    assert sorted(book["sequences"] + book["events"]) == list(range(1, refreshed.sequence + 1))
    assert refreshed.sequence == executed + len(book["events"])
    assert book["negative"] == 0
    assert book["positions"] == wallets
    # Conservation: every lamport that came in is in a balance, in the curve (or the pool it
    # migrated to, less the migration fee) or in fees that left the market.
    if refreshed.phase == Phase.POOL:
        assert (
            book["sol"] + refreshed.pool_sol_reserves + book["fees_out"] + refreshed.migration_fee
            == wallets * 100 * 10**9
        )
        assert book["tokens"] + refreshed.pool_token_reserves == refreshed.total_supply
    else:
        assert book["sol"] + refreshed.real_sol_reserves + book["fees"] == wallets * 100 * 10**9
        assert book["tokens"] + refreshed.real_token_reserves == refreshed.initial_real_token
    assert refreshed.virtual_sol_reserves - refreshed.real_sol_reserves == 30 * 10**9

    # Every client saw every event exactly once, in sequence order.
    sequenced = ("VIRTUAL_TRADE_EXECUTED", "MARKET_GRADUATED")
    for recorder in recorders:
        await recorder.wait_for(executed, "VIRTUAL_TRADE_EXECUTED", timeout=30)
        seen = [m["data"]["sequence"] for m in recorder.messages if m["type"] in sequenced]
        assert seen == list(range(1, refreshed.sequence + 1))
    await asyncio.gather(*(client.close() for client in clients))


async def test_a_trade_on_one_server_process_reaches_a_participant_on_another(
    redis_url, daphne_server
):
    environment = await sync_to_async(environment_create)(name="Two processes")
    first, second = await asyncio.gather(
        sync_to_async(daphne_server)(), sync_to_async(daphne_server)()
    )
    alice_key, bob_key = SigningKey.generate(), SigningKey.generate()
    alice = await signed_in_client(first, alice_key)
    bob = await signed_in_client(second, bob_key)
    bob_seen = Recorder(bob)
    await alice.join(environment.id, wallet_of(alice_key))
    state = await bob.join(environment.id, wallet_of(bob_key))
    assert state["data"]["participants"] == 2  # counted across both processes

    reply = await alice.request(
        "VIRTUAL_TRADE", {"environmentId": environment.id, "amount": "500000000", "isBuy": True}
    )
    assert reply["type"] == "VIRTUAL_TRADE_EXECUTED"
    await alice.request("CHAT_MESSAGE", {"environmentId": environment.id, "message": "hi there"})
    await bob_seen.wait_for(1, "VIRTUAL_TRADE_EXECUTED")
    await bob_seen.wait_for(1, "CHAT_MESSAGE")
    heard = bob_seen.of_type("VIRTUAL_TRADE_EXECUTED")[0]
    assert heard["data"]["trade"] == reply["data"]["trade"]
    assert bob_seen.of_type("CHAT_MESSAGE")[0]["data"]["sequence"] == 2

    await alice.close()
    await asyncio.sleep(0.3)
    again = await bob.join(environment.id, wallet_of(bob_key))
    assert again["data"]["participants"] == 1
    await bob.close()


async def test_an_oversized_frame_closes_the_socket_with_1009(daphne_server):
    server = await sync_to_async(daphne_server)()
    async with websockets.connect(server.ws, max_size=None) as client:
        await client.send("x" * (64 * 1024 - 10))  # under the limit: just not JSON
        reply = json.loads(await client.recv())
        assert reply["data"]["code"] == "INVALID_MESSAGE"
        await client.send(json.dumps({"type": "HEARTBEAT", "data": {"pad": "y" * 70_000}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_the_rate_limit_counts_a_wallets_messages_on_every_server_process(
    redis_url, daphne_server
):
    limit = {"FUNPUMP_RATE_LIMIT": "6/60", "FUNPUMP_REDIS_PREFIX": f"rate-{time.time_ns()}"}
    first, second = await asyncio.gather(
        sync_to_async(daphne_server)(**limit), sync_to_async(daphne_server)(**limit)
    )
    key = SigningKey.generate()
    token = await sync_to_async(token_issue)(wallet_of(key))
    on_first = FunPumpClient(first.ws, token=token.token, origin=first.http)
    on_second = FunPumpClient(second.ws, token=token.token, origin=second.http)
    await on_first.connect()
    await on_second.connect()
    codes = []
    for index in range(6):
        client = on_first if index % 2 else on_second
        codes.append((await client.request("NOT_A_TYPE"))["data"]["code"])
    assert codes == ["INVALID_MESSAGE"] * 6
    refused = await on_first.request("NOT_A_TYPE")
    assert refused["data"]["code"] == "RATE_LIMITED"
    assert refused["data"]["details"]["retryAfterMs"] > 0
    heartbeat = await on_second.request("HEARTBEAT")  # exempt
    assert heartbeat["type"] == "HEARTBEAT"
    await on_first.close()
    await on_second.close()


async def test_a_price_subscriber_on_another_process_sees_the_trade(redis_url, daphne_server):
    environment = await sync_to_async(environment_create)(name="Prices across processes")
    first, second = await asyncio.gather(
        sync_to_async(daphne_server)(), sync_to_async(daphne_server)()
    )
    key = SigningKey.generate()
    trader = await signed_in_client(first, key)
    watcher = FunPumpClient(second.ws, origin=second.http)  # anonymous
    await watcher.connect()
    seen = Recorder(watcher)
    subscription = {"mintAddress": environment.token_mint, "environmentId": environment.id}
    snapshot = await watcher.request("SUBSCRIBE_PRICE", subscription)
    assert snapshot["data"]["volume"] == "0"
    await trader.join(environment.id, wallet_of(key))
    reply = await trader.request(
        "VIRTUAL_TRADE", {"environmentId": environment.id, "amount": "500000000", "isBuy": True}
    )
    await seen.wait_for(2, "PRICE_UPDATE")  # the snapshot, then the update
    update = seen.of_type("PRICE_UPDATE")[-1]
    assert update["data"]["volume"] == reply["data"]["trade"]["solAmount"]
    assert update["data"]["price"] != snapshot["data"]["price"]
    await trader.close()
    await watcher.close()
