"""Faults: the server loses PostgreSQL for a while (a proxy in between cuts it off)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from nacl.signing import SigningKey

from environments.models import Environment, Position
from environments.services import environment_create
from gateway.client import FunPumpClient, wallet_of
from tests.e2e.conftest import database_url, free_port
from trading.models import Trade
from wallets.services import token_issue

pytestmark = pytest.mark.asyncio


class CuttableProxy:
    """A TCP proxy to PostgreSQL that can drop every connection and refuse new ones."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.down = False
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers |= {writer, up_writer}
        with contextlib.suppress(asyncio.CancelledError):  # the test's loop is closing
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
        self.writers.discard(writer)

    def cut(self) -> None:
        self.down = True
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        self.server.close()


@pytest.mark.timeout(120)
async def test_trades_fail_cleanly_while_the_database_is_gone_and_resume_after(
    postgres, daphne_server
):
    proxy = CuttableProxy(int(connection.settings_dict.get("PORT") or 5432))
    await proxy.start()
    proxied = database_url().replace(
        f":{connection.settings_dict.get('PORT') or 5432}/", f":{proxy.port}/"
    )
    environment = await database_sync_to_async(environment_create)(name="Database outage")
    server = await database_sync_to_async(daphne_server)(DATABASE_URL=proxied)
    key = SigningKey.generate()
    token = await database_sync_to_async(token_issue)(wallet_of(key))
    client = FunPumpClient(server.ws, token=token.token, origin=server.http)
    await client.connect()
    await client.join(environment.id, wallet_of(key))
    buy = {"environmentId": environment.id, "amount": "100000000", "isBuy": True}
    assert (await client.request("VIRTUAL_TRADE", buy))["type"] == "VIRTUAL_TRADE_EXECUTED"

    def snapshot() -> tuple:
        env = Environment.objects.get(pk=environment.id)
        position = Position.objects.get(environment=env, wallet=wallet_of(key))
        return (
            env.sequence,
            env.virtual_sol_reserves,
            position.sol_balance,
            position.token_balance,
            Trade.objects.filter(environment=env).count(),
        )

    before = await database_sync_to_async(snapshot)()
    proxy.cut()
    started = time.monotonic()
    reply = await client.request("VIRTUAL_TRADE", buy, timeout=30)
    print(
        f"trade during the outage answered {reply['data']['code']} after "
        f"{time.monotonic() - started:.1f} s"
    )
    assert reply["type"] == "ERROR"
    assert reply["data"]["code"] == "INTERNAL_ERROR"
    assert set(reply["data"]) <= {"code", "message", "details"}
    assert (await client.request("HEARTBEAT"))["type"] == "HEARTBEAT"  # the socket lives on
    assert await database_sync_to_async(snapshot)() == before  # nothing half-applied

    proxy.restore()
    restored = time.monotonic()
    async with asyncio.timeout(30):
        while True:
            reply = await client.request("VIRTUAL_TRADE", buy, timeout=30)
            if reply["type"] == "VIRTUAL_TRADE_EXECUTED":
                break
            await asyncio.sleep(0.2)
    print(f"trading resumed {time.monotonic() - restored:.1f} s after the database returned")
    after = await database_sync_to_async(snapshot)()
    assert after[0] == before[0] + 1  # exactly one more trade: the one that succeeded
    assert after[4] == before[4] + 1
    await client.close()
    await proxy.close()
