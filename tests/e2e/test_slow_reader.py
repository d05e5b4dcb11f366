"""A client that stops reading is disconnected, not buffered without bound."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets
from channels.db import database_sync_to_async
from nacl.signing import SigningKey

from environments.services import environment_create
from gateway.client import wallet_of
from wallets.services import token_issue

pytestmark = pytest.mark.asyncio


async def joined_socket(server, environment_id: str, receive_buffer: int | None = None):
    key = SigningKey.generate()
    token = (await database_sync_to_async(token_issue)(wallet_of(key))).token
    raw = socket.socket()
    if receive_buffer:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.connect(("127.0.0.1", server.port))
    client = await websockets.connect(
        server.ws, sock=raw, additional_headers={"Authorization": f"Bearer {token}"}
    )
    join = {"environmentId": environment_id, "userId": wallet_of(key)}
    await client.send(json.dumps({"type": "JOIN_ENVIRONMENT", "data": join}))
    assert json.loads(await client.recv())["type"] == "ENVIRONMENT_STATE"
    return client


@pytest.mark.timeout(120)
async def test_a_client_that_stops_reading_is_dropped(daphne_server):
    environment = await database_sync_to_async(environment_create)(name="Slow reader")
    server = await database_sync_to_async(daphne_server)(
        FUNPUMP_MAX_BUFFERED_BYTES="65536", FUNPUMP_RATE_LIMIT="100000/60"
    )
    slow = await joined_socket(server, environment.id, receive_buffer=4096)
    slow.transport.pause_reading()  # a client that never reads again
    talker = await joined_socket(server, environment.id)
    line = "🚀" * 500  # about 2 KB per broadcast frame
    batch = [{"environmentId": environment.id, "message": line}] * 25  # a 50 KB frame
    sent = 0
    while sent < 3000:
        frame = {"type": "CHAT_MESSAGE", "data": batch}
        await talker.send(json.dumps(frame, ensure_ascii=False))
        for _ in batch:
            assert json.loads(await talker.recv())["type"] == "CHAT_MESSAGE"
        sent += len(batch)
        if slow.state is websockets.protocol.State.CLOSED:
            break
    slow.transport.resume_reading()
    received = 0
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(30):
            while True:
                await slow.recv()
                received += 1
    # The server gave up on the slow client long before the talker was done.
    print(f"slow client got {received} of {sent} frames before the server dropped it")
    assert received < sent, (received, sent)
    await talker.send(json.dumps({"type": "HEARTBEAT"}))
    assert json.loads(await talker.recv())["type"] == "HEARTBEAT"
    await talker.close()
