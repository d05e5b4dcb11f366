"""A real server whose speech model is still being built: voice waits, nothing else does.

The server (``python -m funpump.serve``) starts with an empty model cache, so it builds the model
in a child process at startup. Here another process (this test) holds the cache's build lock, as
a second server building the same model would: the server's build waits until the test hands it
the finished files, so the "slow build" lasts exactly as long as the test needs.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from nacl.signing import SigningKey

from environments.services import environment_create
from gateway.client import FunPumpClient, sign_in, wallet_of
from tests.conftest import require
from tests.voice.speech import silence, speak
from voice.speech import moonshine

pytestmark = pytest.mark.asyncio


async def voice_session(client: FunPumpClient, wallet: str, **data: Any) -> dict[str, Any]:
    """``VOICE_SESSION_START``, asked again after ``retryAfterMs`` while the server is getting
    its recogniser ready (``RATE_LIMITED``), as a client should."""
    async with asyncio.timeout(600):
        while True:
            reply = await client.request("VOICE_SESSION_START", {"userId": wallet, **data})
            if reply["type"] != "ERROR" or reply["data"]["code"] != "RATE_LIMITED":
                return reply
            await asyncio.sleep(reply["data"]["details"]["retryAfterMs"] / 1000)


def wait_for_voice(server: Any) -> None:
    """Return once ``server`` serves voice (a throwaway wallet's session, ended at once)."""

    async def ready() -> None:
        key = SigningKey.generate()
        token = await sign_in(server.http, key)
        client = FunPumpClient(server.ws, token=token, origin=server.http)
        await client.connect()
        try:
            reply = await voice_session(client, wallet_of(key))
            assert reply["type"] == "VOICE_SESSION_READY", reply
            await client.send("VOICE_SESSION_END", {"sessionId": reply["data"]["sessionId"]})
        finally:
            await client.close()

    asyncio.run(ready())


def built_models() -> list[Path]:
    """The rebuilt model files, from this process's own cache (built here if missing)."""
    moonshine.prepare()
    folder = moonshine.model_folder()
    return [moonshine.prepared_path(folder / name) for name in moonshine.MODEL_FILES]


async def test_voice_waits_for_the_model_build_and_everything_else_is_answered(
    daphne_server, tmp_path
):
    require(moonshine.available(), "moonshine-cpp ships for x86-64 only")
    built = await asyncio.to_thread(built_models)
    environment = await sync_to_async(environment_create)(name="Starting up")
    folder = tmp_path / "cache" / "moonshine"
    folder.mkdir(parents=True)
    with open(folder / "build.lock", "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another process is building": the server's waits
        server = await sync_to_async(daphne_server)(
            FUNPUMP_CACHE=str(folder.parent), FUNPUMP_VOICE_PRELOAD="1"
        )
        key = SigningKey.generate()
        wallet = wallet_of(key)
        client = FunPumpClient(server.ws, token=await sign_in(server.http, key), origin=server.http)
        await client.connect()
        start = await client.request("VOICE_SESSION_START", {"userId": wallet})
        assert start["type"] == "ERROR", start
        assert start["data"]["code"] == "RATE_LIMITED"
        assert start["data"]["message"] == "voice is starting up: try again shortly"
        assert start["data"]["details"]["retryAfterMs"] > 0

        # Everything else is answered meanwhile: heartbeats on another socket, a trade here.
        async with websockets.connect(server.ws, origin=server.http) as watcher:
            for _ in range(20):
                await watcher.send(json.dumps({"type": "HEARTBEAT"}))
                async with asyncio.timeout(10):
                    assert json.loads(await watcher.recv())["type"] == "HEARTBEAT"
                await asyncio.sleep(0.05)
        assert (await client.join(environment.id, wallet))["type"] == "ENVIRONMENT_STATE"
        trade = await client.request(
            "VIRTUAL_TRADE", {"environmentId": environment.id, "amount": "1000000", "isBuy": True}
        )
        assert trade["type"] == "VIRTUAL_TRADE_EXECUTED"
        again = await client.request("VOICE_SESSION_START", {"userId": wallet})
        assert again["data"]["code"] == "RATE_LIMITED"
        assert again["data"]["details"]["retryAfterMs"] == 5000  # still building
        for model in built:  # the build "finishes": the server's child finds the files
            os.symlink(model, folder / model.name)

    ready = await voice_session(client, wallet)
    assert ready["type"] == "VOICE_SESSION_READY"
    heard: list[dict[str, Any]] = []
    client.on("*", heard.append)
    session_id = ready["data"]["sessionId"]
    await client.send_audio(silence(0.3) + speak("buy two sol") + silence(0.3))
    await client.send("VOICE_AUDIO_END", {"sessionId": session_id}, request_id="stop")
    async with asyncio.timeout(30):
        while not (
            any(m.get("requestId") == "stop" for m in heard)
            and any(m["type"] == "VOICE_RESPONSE" for m in heard)
        ):
            await asyncio.sleep(0.02)
    [answer] = [m for m in heard if m.get("requestId") == "stop"]
    assert answer["data"] == {"text": "buy two sol", "isFinal": True, "sessionId": session_id}
    [command] = [m["data"] for m in heard if m["type"] == "VOICE_COMMAND"]
    assert command["parameters"] == {"isBuy": True, "amount": "2000000000"}
    await client.close()
