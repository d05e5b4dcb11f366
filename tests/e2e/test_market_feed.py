"""The market feed end to end: a replayed PumpPortal stream, run_market_feed, daphne, a client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from nacl.signing import SigningKey
from websockets.asyncio.server import serve

from environments.services import environment_create, generate_mint
from gateway.client import FunPumpClient, wallet_of
from tests.e2e.conftest import ROOT, database_url
from tests.trading.test_market import trade_message
from wallets.services import token_issue

pytestmark = pytest.mark.asyncio


@pytest.mark.timeout(120)
async def test_market_prices_flow_from_the_stream_to_subscribers(
    redis_url, daphne_server, tmp_path
):
    mint = generate_mint()
    subscriptions: list[dict] = []

    async def replay(socket):
        """PumpPortal stand-in: after a subscription, a trade of each key every 50 ms."""
        message = json.loads(await socket.recv())
        subscriptions.append(message)
        await socket.send('{"message": "Successfully subscribed to keys."}')
        await socket.send("{junk")
        for step in range(400):
            for key in message["keys"]:
                await socket.send(trade_message(mint=key, vSolInBondingCurve=31 + step / 100))
            await asyncio.sleep(0.05)

    stream = await serve(replay, "127.0.0.1", 0)
    feed_url = f"ws://127.0.0.1:{stream.sockets[0].getsockname()[1]}"
    prefix = f"market-{os.getpid()}-{id(stream)}"
    environ = {"FUNPUMP_MARKET_FEED_URL": feed_url, "FUNPUMP_REDIS_PREFIX": prefix}
    server = await database_sync_to_async(daphne_server)(**environ)
    log = (tmp_path / "feed.log").open("wb")
    feed = subprocess.Popen(
        [sys.executable, "manage.py", "run_market_feed"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            **environ,
        },
        stdout=log,
        stderr=log,
    )
    try:
        watcher = FunPumpClient(server.ws, origin=server.http)
        await watcher.connect()
        updates: list[dict] = []
        watcher.on("PRICE_UPDATE", updates.append)
        subscription = {"mintAddress": mint}
        first = await watcher.request("SUBSCRIBE_PRICE", subscription)
        # Nothing prices this mint yet, but asking made the feed follow it.
        assert first["data"]["code"] == "ENVIRONMENT_NOT_FOUND"
        async with asyncio.timeout(20):
            while True:
                reply = await watcher.request("SUBSCRIBE_PRICE", subscription)
                if reply["type"] == "PRICE_UPDATE":
                    break
                await asyncio.sleep(0.2)
        assert subscriptions and subscriptions[0] == {
            "method": "subscribeTokenTrade",
            "keys": [mint],
        }
        assert reply["data"]["mintAddress"] == mint
        assert "environmentId" not in reply["data"]
        count = len(updates)
        await asyncio.sleep(1.0)
        later = updates[count:]
        assert 2 <= len(later) <= 12  # coalesced to at most one per 100 ms
        assert later[-1]["data"]["price"] != reply["data"]["price"]  # it moves with the stream

        # An environment that mirrors the mint shows the market price beside its own.
        environment = await database_sync_to_async(environment_create)(
            name="Mirror", token_mint=mint
        )
        key = SigningKey.generate()
        token = await database_sync_to_async(token_issue)(wallet_of(key))
        trader = FunPumpClient(server.ws, token=token.token, origin=server.http)
        await trader.connect()
        state = await trader.join(environment.id, wallet_of(key))
        assert state["data"]["marketPrice"] is not None
        assert state["data"]["marketPrice"] != state["data"]["price"]
        await trader.close()
        await watcher.close()
    finally:
        feed.terminate()
        feed.wait(timeout=10)
        log.close()
        stream.close()
