"""A trade stuck on a row lock must not stall the rest of its server process."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async
from django.db import connections, transaction
from nacl.signing import SigningKey

from environments.models import Environment
from environments.services import environment_create
from gateway.client import FunPumpClient, wallet_of
from wallets.services import token_issue

pytestmark = pytest.mark.asyncio


def hold_row_lock(environment_id: str, locked: threading.Event, release: threading.Event) -> None:
    """Another session locks the environment row until told to let go."""
    with transaction.atomic():
        Environment.objects.select_for_update().get(pk=environment_id)
        locked.set()
        release.wait(timeout=30)
    connections.close_all()


@pytest.mark.timeout(120)
async def test_a_locked_environment_does_not_hold_up_trades_elsewhere(postgres, daphne_server):
    busy, free = await asyncio.gather(
        database_sync_to_async(environment_create)(name="Locked"),
        database_sync_to_async(environment_create)(name="Free"),
    )
    server = await database_sync_to_async(daphne_server)(FUNPUMP_LOCK_TIMEOUT_MS="20000")
    clients = []
    for environment in (busy, free):
        key = SigningKey.generate()
        token = await database_sync_to_async(token_issue)(wallet_of(key))
        client = FunPumpClient(server.ws, token=token.token, origin=server.http)
        await client.connect()
        await client.join(environment.id, wallet_of(key))
        clients.append(client)
    stuck_client, free_client = clients

    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_row_lock, args=(busy.id, locked, release))
    holder.start()
    assert await asyncio.to_thread(locked.wait, 10)
    buy = {"amount": "100000000", "isBuy": True}
    stuck = asyncio.create_task(
        stuck_client.request("VIRTUAL_TRADE", {**buy, "environmentId": busy.id}, timeout=60)
    )
    await asyncio.sleep(0.5)  # the first trade is now waiting on the lock inside the server
    # While it waits, the same process serves other sockets: trades, joins and heartbeats.
    for _ in range(5):
        reply = await free_client.request("VIRTUAL_TRADE", {**buy, "environmentId": free.id})
        assert reply["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert not stuck.done()  # still blocked: the lock really was held all along
    release.set()
    reply = await stuck
    assert reply["type"] == "VIRTUAL_TRADE_EXECUTED"
    await asyncio.to_thread(holder.join, 10)
    for client in clients:
        await client.close()
