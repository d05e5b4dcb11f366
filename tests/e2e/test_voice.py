"""End to end: spoken commands through a real daphne and a real socket, answered in words."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from nacl.signing import SigningKey

from environments.services import environment_create
from gateway.client import FunPumpClient, sign_in, wallet_of
from tests.e2e.test_voice_startup import voice_session
from tests.voice.speech import silence, speak
from voice.models import VoiceCommand

pytestmark = pytest.mark.asyncio


async def test_spoken_commands_over_a_real_socket(daphne_server):
    environment = await sync_to_async(environment_create)(name="Voice room")
    server = await sync_to_async(daphne_server)()
    key = SigningKey.generate()
    wallet = wallet_of(key)
    client = FunPumpClient(server.ws, token=await sign_in(server.http, key), origin=server.http)
    await client.connect()
    heard: list[dict[str, Any]] = []
    for kind in ("VOICE_TRANSCRIPTION", "VOICE_COMMAND", "VOICE_RESPONSE", "ERROR"):
        client.on(kind, heard.append)
    assert (await client.join(environment.id, wallet))["type"] == "ENVIRONMENT_STATE"
    ready = await voice_session(client, wallet)
    assert ready["type"] == "VOICE_SESSION_READY"
    session_id = ready["data"]["sessionId"]

    async def utter(text: str) -> list[dict[str, Any]]:
        heard.clear()
        await client.send_audio(silence(0.3) + speak(text) + silence(0.3))
        await client.send("VOICE_AUDIO_END", {"sessionId": session_id}, request_id=text)
        # Answered by a final carrying the requestId: the utterance's, or its final again.
        async with asyncio.timeout(20):
            while not (
                any(m.get("requestId") == text for m in heard)
                and any(m["type"] in ("VOICE_RESPONSE", "ERROR") for m in heard)
            ):
                await asyncio.sleep(0.02)
        told = next(i for i, m in enumerate(heard) if m["type"] in ("VOICE_RESPONSE", "ERROR"))
        return heard[: told + 1]

    buy = await utter("buy two sol")
    assert buy[-3]["data"] == {"text": "buy two sol", "isFinal": True, "sessionId": session_id}
    assert buy[-2]["data"]["intent"] == "EXECUTE_TRADE"
    assert buy[-2]["data"]["parameters"] == {"isBuy": True, "amount": "2000000000"}
    assert buy[-1]["data"]["text"].startswith("Buy about")

    # Confirming is the client's move: the trade goes through as an ordinary message.
    trade = await client.request(
        "VIRTUAL_TRADE", {"environmentId": environment.id, "amount": "2000000000", "isBuy": True}
    )
    assert trade["type"] == "VIRTUAL_TRADE_EXECUTED"

    sell = await utter("sell all")
    assert sell[-3]["data"]["text"] == "sell all"
    assert sell[-2]["data"]["parameters"] == {"isBuy": False, "fraction": "1"}
    assert sell[-1]["data"]["text"].startswith("Sell ")

    price = await utter("what is the price")
    assert price[-2]["data"]["intent"] == "MARKET_ANALYSIS"
    assert price[-2]["data"]["parameters"] == {"metric": "price"}
    assert "SOL per token" in price[-1]["data"]["text"]
    assert all(message["data"]["sessionId"] == session_id for message in buy + sell + price)

    await client.send("VOICE_SESSION_END", {"sessionId": session_id})
    await client.close()
    intents = await sync_to_async(list)(
        VoiceCommand.objects.filter(session_id=session_id).values_list("intent", flat=True)
    )
    assert sorted(intents) == ["EXECUTE_TRADE", "EXECUTE_TRADE", "MARKET_ANALYSIS"]
