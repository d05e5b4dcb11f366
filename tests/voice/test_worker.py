"""The web process's side of a worker-recognised session: what it forwards, and its bounds."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.layers import get_channel_layer

from protocol.errors import DomainError, ErrorCode
from voice import worker
from voice.session import SessionInfo
from voice.worker import CHUNK_BYTES, RemoteRunner


async def runner_for(delivered: list[str]) -> tuple[RemoteRunner, str]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    session = SessionInfo("vs_test", "wallet", None)
    runner = RemoteRunner(session, channel, delivered.append, expires_at=time.time() + 60)
    return runner, channel


async def test_audio_goes_to_the_worker_in_order_and_in_bounded_chunks():
    runner, channel = await runner_for([])
    layer = get_channel_layer()
    await runner.start()
    runner.audio(bytes(range(256)) * 160)  # 40,960 bytes: three chunks
    runner.end_utterance("r1")
    opened = await layer.receive(channel)
    assert opened["type"] == "speech.open" and opened["session"] == "vs_test"
    chunks = [await layer.receive(channel) for _ in range(3)]
    assert [len(chunk["pcm"]) for chunk in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 8960]
    assert b"".join(chunk["pcm"] for chunk in chunks) == bytes(range(256)) * 160
    assert await layer.receive(channel) == {
        "type": "speech.end",
        "session": "vs_test",
        "requestId": "r1",
    }
    await runner.close()
    assert (await layer.receive(channel))["type"] == "speech.close"


async def test_malformed_or_too_much_audio_is_refused_before_it_is_forwarded(monkeypatch):
    monkeypatch.setattr(worker, "QUEUE_LIMIT", 2)
    runner, _ = await runner_for([])  # not started: nothing drains the queue
    with pytest.raises(DomainError) as odd:
        runner.audio(b"\x00" * 3)
    assert odd.value.code is ErrorCode.INVALID_MESSAGE
    runner.audio(b"\x00" * CHUNK_BYTES * 2)
    with pytest.raises(DomainError) as full:
        runner.end_utterance("r1")
    assert full.value.code is ErrorCode.RATE_LIMITED
    assert full.value.details == {"sessionId": "vs_test", "retryAfterMs": 1000}


async def test_an_end_that_cannot_be_forwarded_is_still_answered(monkeypatch):
    delivered: list[str] = []
    runner, _ = await runner_for(delivered)
    await runner.start()

    async def broken(channel: str, message: dict[str, object]) -> None:
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(runner.layer, "send", broken)
    runner.end_utterance("r1")
    for _ in range(100):
        if delivered:
            break
        await asyncio.sleep(0.01)
    [frame] = delivered
    assert json.loads(frame) == {
        "type": "ERROR",
        "data": {"code": "INTERNAL_ERROR", "message": "internal error"},
        "requestId": "r1",
    }
    await runner.close()


async def test_ends_are_answered_when_the_worker_goes_silent(monkeypatch):
    monkeypatch.setattr(worker, "ANSWER_WAIT", 0.2)
    delivered: list[str] = []
    runner, _ = await runner_for(delivered)
    await runner.start()
    runner.end_utterance("r1")
    runner.end_utterance("r2")
    # The worker answers the first end, then dies before the second.
    final = {"type": "VOICE_TRANSCRIPTION", "requestId": "r1"}
    final["data"] = {"text": "buy two sol", "isFinal": True, "sessionId": "vs_test"}
    runner.heard(json.dumps(final))
    await asyncio.sleep(0.1)
    assert delivered == []  # still within the wait
    await asyncio.sleep(0.3)
    [frame] = delivered
    assert json.loads(frame) == {
        "type": "ERROR",
        "data": {"code": "INTERNAL_ERROR", "message": "the speech worker did not answer"},
        "requestId": "r2",
    }
    await runner.close()


async def test_a_worker_that_keeps_talking_is_waited_for(monkeypatch):
    monkeypatch.setattr(worker, "ANSWER_WAIT", 0.2)
    delivered: list[str] = []
    runner, _ = await runner_for(delivered)
    await runner.start()
    runner.end_utterance("r1")
    interim = {"type": "VOICE_TRANSCRIPTION", "data": {"text": "buy", "isFinal": False}}
    for _ in range(4):  # interims keep coming while the queue is worked through
        await asyncio.sleep(0.1)
        runner.heard(json.dumps(interim))
    final = {"type": "VOICE_TRANSCRIPTION", "data": {"text": "buy two", "isFinal": True}}
    runner.heard(json.dumps({**final, "requestId": "r1"}))
    await asyncio.sleep(0.3)
    assert delivered == []
    assert not runner.unanswered
    await runner.close()
