"""The asyncio client against a small local WebSocket server that records what it gets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from gateway.client import FunPumpClient

pytestmark = pytest.mark.asyncio


class Recorder:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.connections = 0

    async def handler(self, connection: ServerConnection) -> None:
        self.connections += 1
        async for raw in connection:
            frame = json.loads(raw)
            self.frames.append(frame)
            if frame.get("requestId"):
                reply = {"type": "ENVIRONMENT_STATE", "data": {"id": "e"}}
                if frame["type"] == "HEARTBEAT":
                    reply = {"type": "HEARTBEAT", "data": {"timestamp": 1}}
                await connection.send(json.dumps({**reply, "requestId": frame["requestId"]}))


async def start(recorder: Recorder) -> tuple[Any, str]:
    server = await serve(recorder.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}"


async def test_request_matches_its_reply_and_handlers_see_every_message():
    recorder = Recorder()
    server, url = await start(recorder)
    seen: list[str] = []
    async with FunPumpClient(url, token="t") as client:
        client.on("HEARTBEAT", lambda message: seen.append(message["type"]))
        reply = await client.request("HEARTBEAT")
        assert reply["type"] == "HEARTBEAT"
        assert reply["requestId"] == recorder.frames[0]["requestId"]
    assert seen == ["HEARTBEAT"]
    server.close()


async def test_a_failing_handler_is_logged_and_the_client_keeps_reading(caplog):
    recorder = Recorder()
    server, url = await start(recorder)
    async with FunPumpClient(url, token="t") as client:
        client.on("HEARTBEAT", lambda message: message["data"]["missing"])  # raises KeyError
        assert (await client.request("HEARTBEAT"))["type"] == "HEARTBEAT"
        assert (await client.request("HEARTBEAT", timeout=2))["type"] == "HEARTBEAT"
    assert "handler of HEARTBEAT failed" in caplog.text
    server.close()


async def test_batching_sends_one_frame_per_type_within_the_window():
    recorder = Recorder()
    server, url = await start(recorder)
    async with FunPumpClient(url, batch_window=0.1) as client:
        for index in range(3):
            await client.send("CHAT_MESSAGE", {"environmentId": "e", "message": str(index)})
        await asyncio.sleep(0.3)
    assert len(recorder.frames) == 1
    assert [item["message"] for item in recorder.frames[0]["data"]] == ["0", "1", "2"]
    server.close()


async def test_heartbeats_go_out_on_their_interval():
    recorder = Recorder()
    server, url = await start(recorder)
    async with FunPumpClient(url, heartbeat_interval=0.05):
        await asyncio.sleep(0.3)
    assert sum(frame["type"] == "HEARTBEAT" for frame in recorder.frames) >= 3
    server.close()


async def test_reconnects_and_rejoins_after_the_server_drops_the_connection():
    recorder = Recorder()
    server, url = await start(recorder)
    client = FunPumpClient(url, reconnect_delay=0.05)
    await client.connect()
    await client.join("e", "wallet")
    # Drop the live connection from the server side.
    for connection in list(server.connections):
        await connection.close()
    async with asyncio.timeout(5):
        while recorder.connections < 2 or len(recorder.frames) < 2:
            await asyncio.sleep(0.02)
    assert recorder.frames[-1]["type"] == "JOIN_ENVIRONMENT"
    assert recorder.frames[-1]["data"] == {"environmentId": "e", "userId": "wallet"}
    await client.close()
    server.close()


async def test_gives_up_after_the_configured_attempts():
    recorder = Recorder()
    server, url = await start(recorder)
    client = FunPumpClient(url, reconnect_delay=0.01, reconnect_attempts=2)
    await client.connect()
    server.close()
    await server.wait_closed()
    async with asyncio.timeout(5):
        await client._tasks[0]  # the reader ends once the attempts are used up
    await client.close()
