"""Voice over the socket: sessions and their LiveKit tokens, audio in, words and commands out."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from livekit import api

from tests.conftest import Wallet, open_socket
from tests.voice.speech import chunks, silence, speak
from voice.livekit import livekit_secret
from voice.models import VoiceCommand, VoiceSession

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(socket, frame: dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps(frame))
    return json.loads(await socket.receive_from(timeout=10))


async def start(socket, wallet: Wallet, **extra: Any) -> dict[str, Any]:
    data = {"userId": wallet.address, **extra}
    reply = await ask(socket, {"type": "VOICE_SESSION_START", "data": data})
    assert reply["type"] == "VOICE_SESSION_READY", reply
    return reply["data"]


async def say(socket, session_id: str, text: str, *, end: bool = True) -> list[dict[str, Any]]:
    """Speak ``text`` into the session; return every message up to its VOICE_RESPONSE."""
    for frame in chunks(silence(0.3) + speak(text) + silence(0.2)):
        await socket.send_to(bytes_data=frame)
    if end:
        await socket.send_to(
            text_data=json.dumps({"type": "VOICE_AUDIO_END", "data": {"sessionId": session_id}})
        )
    messages = []
    while not messages or messages[-1]["type"] not in ("VOICE_RESPONSE", "ERROR"):
        messages.append(json.loads(await socket.receive_from(timeout=20)))
    return messages


async def test_session_ready_carries_a_livekit_token_for_this_wallet_and_room_only(alice):
    socket = await open_socket(alice)
    ready = await start(socket, alice)
    claims = api.TokenVerifier(settings.LIVEKIT_API_KEY, livekit_secret()).verify(
        ready["liveKitToken"]
    )
    assert claims.identity == alice.address
    assert claims.video.room == ready["room"]
    assert claims.video.room_join is True
    assert claims.video.can_publish is True
    assert claims.video.can_publish_sources == ["microphone"]
    assert not claims.video.can_subscribe
    assert not claims.video.can_publish_data
    assert not claims.video.room_admin and not claims.video.room_create
    assert ready["liveKitUrl"] == settings.LIVEKIT_URL
    session = await VoiceSession.objects.aget(pk=ready["sessionId"])
    assert session.wallet == alice.address and session.language == "en-US"
    lifetime = session.expires_at - session.started_at
    assert timedelta(seconds=settings.FUNPUMP_VOICE_SESSION_TTL - 5) < lifetime
    assert lifetime <= timedelta(seconds=settings.FUNPUMP_VOICE_SESSION_TTL + 5)
    with pytest.raises(Exception):  # a token signed with another secret is refused
        api.TokenVerifier(settings.LIVEKIT_API_KEY, "x" * 40).verify(ready["liveKitToken"])
    await socket.disconnect()


async def test_spoken_buy_is_transcribed_recognised_and_quoted_not_executed(alice, environment):
    socket = await open_socket(alice)
    join = {"environmentId": environment.id, "userId": alice.address}
    assert (await ask(socket, {"type": "JOIN_ENVIRONMENT", "data": join}))[
        "type"
    ] == "ENVIRONMENT_STATE"
    ready = await start(socket, alice)
    messages = await say(socket, ready["sessionId"], "buy two sol")
    kinds = [m["type"] for m in messages]
    assert kinds[-3:] == ["VOICE_TRANSCRIPTION", "VOICE_COMMAND", "VOICE_RESPONSE"], kinds
    final = messages[-3]["data"]
    assert final == {"text": "buy two sol", "isFinal": True, "sessionId": ready["sessionId"]}
    assert all(not m["data"]["isFinal"] for m in messages[:-3])
    command = messages[-2]["data"]
    assert command["intent"] == "EXECUTE_TRADE"
    assert command["parameters"] == {"isBuy": True, "amount": "2000000000"}
    assert 0.5 < command["confidence"] <= 1
    assert "Buy about" in messages[-1]["data"]["text"] and "Confirm" in messages[-1]["data"]["text"]
    await environment.arefresh_from_db()
    assert environment.sequence == 0  # nothing was traded
    heard = await VoiceCommand.objects.aget(session_id=ready["sessionId"])
    assert heard.intent == "EXECUTE_TRADE" and heard.source == "socket"
    await socket.disconnect()
