"""A settlement run as its own process reaches a subscriber on a server through Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from nacl.signing import SigningKey

from environments.services import environment_create
from gateway.client import FunPumpClient, wallet_of
from tests.e2e.conftest import ROOT, database_url
from wallets.services import token_issue

pytestmark = pytest.mark.asyncio


@pytest.mark.timeout(120)
async def test_settle_rewards_pushes_reward_updates(redis_url, daphne_server, published_tiers):
    server = await database_sync_to_async(daphne_server)()
    key = SigningKey.generate()
    wallet = wallet_of(key)
    room = await database_sync_to_async(environment_create)(name="Mine", launched_by=wallet)
    token = await database_sync_to_async(token_issue)(wallet)
    client = FunPumpClient(server.ws, token=token.token, origin=server.http)
    await client.connect()
    updates: list[dict] = []
    client.on("REWARD_UPDATE", updates.append)
    await client.request("SUBSCRIBE_REWARDS", {"userId": wallet})
    await client.join(room.id, wallet)
    await client.request(
        "VIRTUAL_TRADE", {"environmentId": room.id, "amount": "1000000000", "isBuy": True}
    )
    async with asyncio.timeout(5):
        while not updates or updates[-1]["data"]["totalVolume"] == "0":
            await asyncio.sleep(0.02)

    settle = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "settle_rewards"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "FUNPUMP_REDIS_PREFIX": settings.FUNPUMP_REDIS_PREFIX,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert settle.returncode == 0, settle.stderr
    assert "trades" in settle.stdout
    async with asyncio.timeout(5):
        while updates[-1]["data"]["unclaimedRewards"] == "0":
            await asyncio.sleep(0.02)
    assert int(updates[-1]["data"]["unclaimedRewards"]) == 2_962_963 + 9_382_717 * 500 // 10_000
    await client.close()
