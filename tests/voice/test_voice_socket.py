"""Voice over the socket: sessions and their LiveKit tokens, audio in, words and commands out."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from django.conf import settings
from livekit import api

from kernel import metrics
from tests.conftest import Wallet, open_socket
from tests.voice.speech import chunks, silence, speak
from voice.livekit import livekit_secret
from voice.models import VoiceCommand, VoiceSession

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("voice_ready")]


async def ask(socket, frame: dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps(frame))
    return json.loads(await socket.receive_from(timeout=10))


async def start(socket, wallet: Wallet, **extra: Any) -> dict[str, Any]:
    data = {"userId": wallet.address, **extra}
    reply = await ask(socket, {"type": "VOICE_SESSION_START", "data": data})
    assert reply["type"] == "VOICE_SESSION_READY", reply
    return reply["data"]


async def say(
    socket, session_id: str, text: str, *, end: bool = True, pause: float = 0.2, **voice: Any
) -> list[dict[str, Any]]:
    """Speak ``text`` into the session; return every message up to its VOICE_RESPONSE.

    With ``end``, VOICE_AUDIO_END follows the audio and must be answered by a final carrying its
    requestId: the utterance's own, or, when silence had already ended it, its final again.
    """
    for frame in chunks(silence(0.3) + speak(text, **voice) + silence(pause)):
        await socket.send_to(bytes_data=frame)
    request_id = f"end-{session_id}-{text}"
    if end:
        stop = {"type": "VOICE_AUDIO_END", "data": {"sessionId": session_id}}
        await socket.send_to(text_data=json.dumps({**stop, "requestId": request_id}))
    messages: list[dict[str, Any]] = []
    answer = None

    def answered() -> bool:
        told = any(m["type"] in ("VOICE_RESPONSE", "ERROR") for m in messages)
        return told and (not end or answer is not None)

    while not answered():
        message = json.loads(await socket.receive_from(timeout=20))
        if end and message.get("requestId") == request_id:
            answer = message
            assert message["type"] == "VOICE_TRANSCRIPTION" and message["data"]["isFinal"]
            if any(m["type"] in ("VOICE_RESPONSE", "ERROR") for m in messages):
                heard = [m for m in messages if m["type"] == "VOICE_TRANSCRIPTION"][-1]
                assert message["data"] == heard["data"]  # the final already sent, again
                continue
        messages.append(message)
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
    with pytest.raises(jwt.InvalidSignatureError):  # another secret's check fails
        api.TokenVerifier(settings.LIVEKIT_API_KEY, "x" * 40).verify(ready["liveKitToken"])
    await socket.disconnect()


async def test_spoken_buy_is_transcribed_recognised_and_quoted_not_executed(alice, environment):
    socket = await open_socket(alice)
    join = {"environmentId": environment.id, "userId": alice.address}
    assert (await ask(socket, {"type": "JOIN_ENVIRONMENT", "data": join}))[
        "type"
    ] == "ENVIRONMENT_STATE"
    ready = await start(socket, alice)
    trades_heard = metrics.VOICE_COMMANDS.labels("EXECUTE_TRADE")._value.get()
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
    assert metrics.VOICE_COMMANDS.labels("EXECUTE_TRADE")._value.get() == trades_heard + 1
    await socket.disconnect()


async def expect_error(socket, frame: dict[str, Any], code: str) -> dict[str, Any]:
    reply = await ask(socket, frame)
    assert reply["type"] == "ERROR" and reply["data"]["code"] == code, reply
    return reply["data"]


async def test_voice_needs_the_signed_in_wallet_and_a_supported_language(alice, bob):
    anonymous = await open_socket()
    start_alice = {"type": "VOICE_SESSION_START", "data": {"userId": alice.address}}
    await expect_error(anonymous, start_alice, "UNAUTHORIZED")
    socket = await open_socket(bob)
    await expect_error(socket, start_alice, "UNAUTHORIZED")
    french = {"userId": bob.address, "preferredLanguage": "fr-FR"}
    error = await expect_error(
        socket, {"type": "VOICE_SESSION_START", "data": french}, "INVALID_MESSAGE"
    )
    assert error["details"]["errors"][0]["field"] == "preferredLanguage"
    lost = {"userId": bob.address, "environmentId": "nowhere"}
    await expect_error(
        socket, {"type": "VOICE_SESSION_START", "data": lost}, "ENVIRONMENT_NOT_FOUND"
    )
    assert not await VoiceSession.objects.aexists()
    ready = await start(socket, bob, preferredLanguage="en-us")
    assert (await VoiceSession.objects.aget(pk=ready["sessionId"])).language == "en-US"
    await anonymous.disconnect()
    await socket.disconnect()


async def test_audio_is_refused_outside_a_session_and_when_malformed(alice):
    socket = await open_socket(alice)
    await socket.send_to(bytes_data=silence(0.1))
    reply = json.loads(await socket.receive_from(timeout=5))
    assert reply["data"]["code"] == "INVALID_MESSAGE"
    ready = await start(socket, alice)
    await socket.send_to(bytes_data=b"\x00\x01\x02")  # not whole 16-bit samples
    reply = json.loads(await socket.receive_from(timeout=5))
    assert reply["data"]["code"] == "INVALID_MESSAGE"
    other = {"type": "VOICE_AUDIO_END", "data": {"sessionId": "vs_someone_else"}}
    await expect_error(socket, other, "INVALID_MESSAGE")
    end = {"type": "VOICE_SESSION_END", "data": {"sessionId": ready["sessionId"]}}
    await socket.send_to(text_data=json.dumps(end))
    assert await socket.receive_nothing(timeout=0.5)  # no reply to the end
    session = await VoiceSession.objects.aget(pk=ready["sessionId"])
    assert session.ended_at is not None and session.end_reason == "client"
    await socket.send_to(bytes_data=silence(0.1))
    reply = json.loads(await socket.receive_from(timeout=5))
    assert reply["data"]["code"] == "INVALID_MESSAGE"
    await socket.disconnect()


async def test_one_session_per_wallet_across_connections(alice):
    first = await open_socket(alice)
    second = await open_socket(alice)
    old = await start(first, alice)
    new = await start(second, alice)
    assert old["sessionId"] != new["sessionId"] and old["room"] != new["room"]
    replaced = await VoiceSession.objects.aget(pk=old["sessionId"])
    assert replaced.end_reason == "replaced"
    assert await VoiceSession.objects.filter(wallet=alice.address, ended_at=None).acount() == 1
    await first.receive_nothing(timeout=0.3)  # the end reaches the first connection
    await first.send_to(bytes_data=silence(0.1))
    reply = json.loads(await first.receive_from(timeout=5))
    assert reply["data"]["code"] == "INVALID_MESSAGE"
    await second.disconnect()
    assert (await VoiceSession.objects.aget(pk=new["sessionId"])).end_reason == "disconnected"
    await first.disconnect()


async def test_silence_then_audio_end_gets_an_empty_final_and_no_command(alice):
    socket = await open_socket(alice)
    ready = await start(socket, alice)
    await socket.send_to(bytes_data=silence(0.5))
    end = {"type": "VOICE_AUDIO_END", "data": {"sessionId": ready["sessionId"]}}
    await socket.send_to(text_data=json.dumps(end))
    final = json.loads(await socket.receive_from(timeout=10))
    assert final["data"] == {"text": "", "isFinal": True, "sessionId": ready["sessionId"]}
    command = json.loads(await socket.receive_from(timeout=10))
    assert command["data"]["intent"] == "UNKNOWN" and command["data"]["confidence"] <= 0.3
    response = json.loads(await socket.receive_from(timeout=10))
    assert response["type"] == "VOICE_RESPONSE"
    await socket.disconnect()


async def test_audio_end_after_silence_ended_the_utterance_gets_its_final_again(alice):
    socket = await open_socket(alice)
    session_id = (await start(socket, alice))["sessionId"]
    # A long pause: the server ends the utterance on the silence by itself.
    messages = await say(socket, session_id, "check my rewards", end=False, pause=0.8)
    assert [m["type"] for m in messages][-3:] == [
        "VOICE_TRANSCRIPTION",
        "VOICE_COMMAND",
        "VOICE_RESPONSE",
    ]
    final = messages[-3]
    assert final["data"]["isFinal"] and final["data"]["text"] and "requestId" not in final
    stop = {"type": "VOICE_AUDIO_END", "data": {"sessionId": session_id}, "requestId": "stop-1"}
    assert await ask(socket, stop) == {
        "type": "VOICE_TRANSCRIPTION",
        "data": {"text": final["data"]["text"], "isFinal": True, "sessionId": session_id},
        "requestId": "stop-1",
    }
    assert await socket.receive_nothing(timeout=0.5)  # the command was given once
    assert await VoiceCommand.objects.filter(session_id=session_id).acount() == 1

    # Nothing said since: the next VOICE_AUDIO_END is answered by an empty final.
    empty = await ask(socket, {**stop, "requestId": "stop-2"})
    assert empty == {
        "type": "VOICE_TRANSCRIPTION",
        "data": {"text": "", "isFinal": True, "sessionId": session_id},
        "requestId": "stop-2",
    }
    command = json.loads(await socket.receive_from(timeout=10))
    assert command["type"] == "VOICE_COMMAND" and command["data"]["intent"] == "UNKNOWN"
    assert "requestId" not in command
    assert json.loads(await socket.receive_from(timeout=10))["type"] == "VOICE_RESPONSE"
    await socket.disconnect()


async def test_audio_end_in_mid_utterance_is_answered_by_that_utterances_final(alice):
    socket = await open_socket(alice)
    session_id = (await start(socket, alice))["sessionId"]
    words = speak("sell one thousand tokens")
    for frame in chunks(silence(0.3) + words[: len(words) * 2 // 3]):  # cut off while speaking
        await socket.send_to(bytes_data=frame)
    stop = {"type": "VOICE_AUDIO_END", "data": {"sessionId": session_id}, "requestId": "cut"}
    await socket.send_to(text_data=json.dumps(stop))
    messages = [json.loads(await socket.receive_from(timeout=20))]
    while messages[-1]["type"] != "VOICE_RESPONSE":
        messages.append(json.loads(await socket.receive_from(timeout=20)))
    finals = [m for m in messages if m["type"] == "VOICE_TRANSCRIPTION" and m["data"]["isFinal"]]
    assert len(finals) == 1 and finals[0]["requestId"] == "cut"
    assert [m["type"] for m in messages[-2:]] == ["VOICE_COMMAND", "VOICE_RESPONSE"]
    assert await socket.receive_nothing(timeout=0.5)  # one answer, not a second final
    await socket.disconnect()


async def test_interim_words_come_before_the_final_and_silence_ends_the_utterance(alice):
    socket = await open_socket(alice)
    ready = await start(socket, alice)
    # No VOICE_AUDIO_END: the server hears the silence after the words and ends by itself.
    messages = await say(
        socket,
        ready["sessionId"],
        "launch a token called moon rocket",
        end=False,
        pause=0.8,
        voice="slt",
        engine="flite",
    )
    transcripts = [m["data"] for m in messages if m["type"] == "VOICE_TRANSCRIPTION"]
    assert [t["isFinal"] for t in transcripts] == [False] * (len(transcripts) - 1) + [True]
    assert len(transcripts) >= 2, transcripts
    assert transcripts[-1]["text"] == "launch a token called moon rocket"
    command = messages[-2]["data"]
    assert command["intent"] == "LAUNCH_TOKEN"
    assert command["parameters"] == {"tokenName": "moon rocket"}
    await socket.disconnect()


async def test_recognised_commands_are_limited_per_wallet(alice, settings):
    settings.FUNPUMP_VOICE_COMMAND_LIMITS = ["1/60"]
    socket = await open_socket(alice)
    ready = await start(socket, alice)
    first = await say(socket, ready["sessionId"], "check my rewards")
    assert first[-2]["data"]["intent"] == "GET_REWARDS"
    second = await say(socket, ready["sessionId"], "check my rewards")
    assert second[-2]["data"]["isFinal"] is True  # the words are still shown
    assert second[-1]["type"] == "ERROR" and second[-1]["data"]["code"] == "RATE_LIMITED"
    assert second[-1]["data"]["details"]["retryAfterMs"] > 0
    await socket.disconnect()


async def test_an_audio_flood_is_refused_once_a_second(alice, settings):
    settings.FUNPUMP_VOICE_AUDIO_BURST = 1.0
    socket = await open_socket(alice)
    await start(socket, alice)
    for frame in chunks(silence(3.0)):
        await socket.send_to(bytes_data=frame)
    replies = [json.loads(await socket.receive_from(timeout=5))]
    assert replies[0]["data"]["code"] == "RATE_LIMITED"
    assert await socket.receive_nothing(timeout=0.3)  # one refusal, not one per frame
    await socket.disconnect()


async def test_a_server_without_a_livekit_secret_says_voice_is_unavailable(alice, settings):
    settings.LIVEKIT_API_SECRET = ""
    socket = await open_socket(alice)
    start_voice = {"type": "VOICE_SESSION_START", "data": {"userId": alice.address}}
    error = await expect_error(socket, start_voice, "INTERNAL_ERROR")
    assert error["message"] == "voice is not available on this server"
    assert not await VoiceSession.objects.aexists()
    await socket.disconnect()
