"""A trade retried after its socket dropped (1006) executes once: real daphne, real sockets.

The client cannot know whether a trade whose answer never came ran. It reconnects, re-joins and
sends the same message with the same requestId: the server answers the original trade, marked
as a replay, whether the first copy committed long ago, is still running, or never arrived.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from nacl.signing import SigningKey

from environments.services import environment_create
from gateway.client import wallet_of
from trading.models import Trade
from wallets.services import token_issue

pytestmark = pytest.mark.asyncio


async def connect(server: Any, token: str) -> websockets.ClientConnection:
    return await websockets.connect(
        server.ws, additional_headers={"Authorization": f"Bearer {token}"}
    )


async def answer_to(socket: websockets.ClientConnection, request_id: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            message: dict[str, Any] = json.loads(await socket.recv())
            if message.get("requestId") == request_id:
                return message


async def joined(server: Any, token: str, environment_id: str, wallet: str) -> Any:
    socket = await connect(server, token)
    join = {"environmentId": environment_id, "userId": wallet}
    await socket.send(json.dumps({"type": "JOIN_ENVIRONMENT", "data": join, "requestId": "j"}))
    assert (await answer_to(socket, "j"))["type"] == "ENVIRONMENT_STATE"
    return socket


def trade_frame(environment_id: str, request_id: str) -> str:
    data = {"environmentId": environment_id, "amount": "1000000000", "isBuy": True}
    return json.dumps({"type": "VIRTUAL_TRADE", "data": data, "requestId": request_id})


async def trades_settle(count: int) -> list[Trade]:
    """The trades once the server has finished with the dropped connection's message."""
    rows: list[Trade] = []
    for _ in range(20):
        rows = await sync_to_async(lambda: list(Trade.objects.all()))()
        if len(rows) >= count:
            break
        await asyncio.sleep(0.05)
    return rows


@pytest.mark.timeout(120)
@pytest.mark.parametrize("drop", ["eof", "reset"])
async def test_a_trade_retried_after_a_dropped_socket_executes_once(postgres, daphne_server, drop):
    server = await sync_to_async(daphne_server)()
    environment = await sync_to_async(environment_create)(name="Retry")
    key = SigningKey.generate()
    wallet = wallet_of(key)
    token = (await sync_to_async(token_issue)(wallet)).token

    first = await joined(server, token, environment.id, wallet)
    await first.send(trade_frame(environment.id, "buy-1"))
    # Gone without a close frame, before reading the answer: the server sees 1006.
    if drop == "eof":
        first.transport.write_eof()  # the frame is delivered, then the end of the stream
    else:
        first.transport.abort()  # reset right away: the frame may never be read
    retry_socket = await joined(server, token, environment.id, wallet)
    await retry_socket.send(trade_frame(environment.id, "buy-1"))
    retry = await answer_to(retry_socket, "buy-1")

    assert retry["type"] == "VIRTUAL_TRADE_EXECUTED", retry
    await trades_settle(1)
    await asyncio.sleep(0.3)  # nothing more may come from the dropped copy
    trades = await sync_to_async(lambda: list(Trade.objects.all()))()
    assert len(trades) == 1
    (trade,) = trades
    assert retry["data"]["trade"]["id"] == str(trade.pk)
    assert retry["data"]["sequence"] == trade.sequence == 1
    if drop == "eof":
        assert retry["data"]["replay"] is True  # the first copy arrived and ran
    # The retry's answer is the first's own copy: the balance right after that one trade.
    assert int(retry["data"]["balance"]["sol"]) == 100 * 10**9 - (
        trade.sol_amount + trade.protocol_fee + trade.creator_fee
    )
    again = retry_socket
    await again.send(trade_frame(environment.id, "buy-1"))
    assert (await answer_to(again, "buy-1"))["data"] == {**retry["data"], "replay": True}
    await again.close()


@pytest.mark.timeout(120)
async def test_copies_on_two_server_processes_at_once_execute_once(postgres, daphne_server):
    first_server, second_server = await asyncio.gather(
        sync_to_async(daphne_server)(), sync_to_async(daphne_server)()
    )
    environment = await sync_to_async(environment_create)(name="Twice")
    key = SigningKey.generate()
    wallet = wallet_of(key)
    token = (await sync_to_async(token_issue)(wallet)).token
    sockets = [
        await joined(first_server, token, environment.id, wallet),
        await joined(second_server, token, environment.id, wallet),
    ]
    for round_number in range(5):
        request_id = f"twice-{round_number}"
        await asyncio.gather(
            *(socket.send(trade_frame(environment.id, request_id)) for socket in sockets)
        )
        answers = await asyncio.gather(*(answer_to(socket, request_id) for socket in sockets))
        assert [answer["type"] for answer in answers] == ["VIRTUAL_TRADE_EXECUTED"] * 2, answers
        assert len({answer["data"]["trade"]["id"] for answer in answers}) == 1
        assert sorted(bool(answer["data"].get("replay")) for answer in answers) == [False, True]
    assert await sync_to_async(Trade.objects.count)() == 5
    for socket in sockets:
        await socket.close()
