"""Faults: Redis goes away under two server processes and comes back.

The test runs its own redis-server on a free port, so stopping it disturbs nothing else.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from channels.db import database_sync_to_async
from nacl.signing import SigningKey

from environments.services import environment_create
from funpump.auth import token_issue
from funpump.client import FunPumpClient, wallet_of
from tests.conftest import require
from tests.e2e.conftest import free_port
from trading.models import Trade

pytestmark = pytest.mark.asyncio
ORIGIN = "http://127.0.0.1"


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"],
                capture_output=True,
                text=True,
                check=False,
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    require(bool(shutil.which("redis-server")), "needs redis-server (Debian package redis-server)")
    redis = PrivateRedis()
    redis.start()
    yield redis
    redis.stop()


async def client_for(server, key: SigningKey) -> FunPumpClient:
    token = await database_sync_to_async(token_issue)(wallet_of(key))
    client = FunPumpClient(server.ws, token=token.token, origin=ORIGIN)
    await client.connect()
    return client


@pytest.mark.timeout(120)
async def test_a_redis_outage_loses_no_trade_and_broadcasts_resume(private_redis, daphne_server):
    environment = await database_sync_to_async(environment_create)(name="Outage")
    redis_env = {"REDIS_URL": private_redis.url, "FUNPUMP_REDIS_PREFIX": "outage"}
    first, second = await asyncio.gather(
        database_sync_to_async(daphne_server)(**redis_env),
        database_sync_to_async(daphne_server)(**redis_env),
    )
    alice_key, bob_key = SigningKey.generate(), SigningKey.generate()
    alice, bob = await client_for(first, alice_key), await client_for(second, bob_key)
    heard: list[int] = []
    bob.on("VIRTUAL_TRADE_EXECUTED", lambda message: heard.append(message["data"]["sequence"]))
    await alice.join(environment.id, wallet_of(alice_key))
    await bob.join(environment.id, wallet_of(bob_key))
    buy = {"environmentId": environment.id, "amount": "100000000", "isBuy": True}
    executed = 0

    async def trade() -> int:
        nonlocal executed
        reply = await alice.request("VIRTUAL_TRADE", buy)
        assert reply["type"] == "VIRTUAL_TRADE_EXECUTED", reply
        executed += 1
        return int(reply["data"]["sequence"])

    sequence = await trade()
    async with asyncio.timeout(5):
        while sequence not in heard:
            await asyncio.sleep(0.02)

    await asyncio.to_thread(private_redis.stop)
    # Redis is gone: the socket keeps answering and trades still execute on their process.
    assert (await alice.request("HEARTBEAT"))["type"] == "HEARTBEAT"
    for _ in range(3):
        await trade()
    state = await bob.join(environment.id, wallet_of(bob_key))  # resynchronise from the database
    assert state["type"] == "ENVIRONMENT_STATE"
    assert state["data"]["sequence"] == executed

    await asyncio.to_thread(private_redis.start)
    outage_over = time.monotonic()
    async with asyncio.timeout(20):
        while True:
            sequence = await trade()
            await asyncio.sleep(0.2)
            if sequence in heard:
                break
    recovered_after = time.monotonic() - outage_over
    print(f"cross-process broadcasts resumed {recovered_after:.1f} s after Redis returned")

    def ledger() -> list[int]:
        return sorted(
            Trade.objects.filter(environment_id=environment.id).values_list("sequence", flat=True)
        )

    assert await database_sync_to_async(ledger)() == list(range(1, executed + 1))
    await alice.close()
    await bob.close()
