"""Voice before the speech recogniser is ready: refused, to be asked again; the rest is served."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import open_socket
from tests.voice.speech import chunks, silence, speak
from voice import session
from voice.models import VoiceSession
from voice.speech import engines
from voice.speech import recogniser as readiness
from voice.speech.recogniser import Phase, Recogniser

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("voice_ready")]


@pytest.fixture(autouse=True)
def short_ready_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start waits this long for a recogniser getting ready before it is refused."""
    monkeypatch.setattr(session, "READY_WAIT", 0.3)


async def ask(socket, frame: dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps(frame))
    return json.loads(await socket.receive_from(timeout=10))


async def until_answered(socket, request_id: str) -> list[dict[str, Any]]:
    """What the session says until the final answering VOICE_AUDIO_END ``request_id`` has come
    and the utterance's VOICE_RESPONSE."""
    messages: list[dict[str, Any]] = []
    while not (
        any(m.get("requestId") == request_id for m in messages)
        and any(m["type"] == "VOICE_RESPONSE" for m in messages)
    ):
        messages.append(json.loads(await socket.receive_from(timeout=20)))
    return messages


@pytest.fixture
def building(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """A recogniser whose model is being built until the test sets the event it yields; then it
    loads the real one (already in this process: ``voice_ready``)."""
    done_building = threading.Event()

    def prepare(recogniser: Recogniser) -> None:
        recogniser.phase = Phase.BUILDING
        done_building.wait(timeout=120)
        recogniser.phase = Phase.LOADING
        readiness.prepare_models(recogniser)

    monkeypatch.setattr(readiness, "recogniser", Recogniser(prepare))
    yield done_building
    done_building.set()


async def test_voice_is_refused_while_the_model_builds_and_everything_else_is_served(
    alice, environment, building
):
    socket = await open_socket(alice)
    watcher = await open_socket()
    start = {"type": "VOICE_SESSION_START", "data": {"userId": alice.address}, "requestId": "v"}
    refused = await ask(socket, start)
    assert refused == {
        "type": "ERROR",
        "data": {
            "code": "RATE_LIMITED",
            "message": "voice is starting up: try again shortly",
            "details": {"retryAfterMs": 5000},
        },
        "requestId": "v",
    }
    assert not await VoiceSession.objects.aexists()

    # Meanwhile the server answers everything else, on every socket.
    for _ in range(3):
        assert (await ask(watcher, {"type": "HEARTBEAT"}))["type"] == "HEARTBEAT"
    join = {"environmentId": environment.id, "userId": alice.address}
    assert (await ask(socket, {"type": "JOIN_ENVIRONMENT", "data": join}))[
        "type"
    ] == "ENVIRONMENT_STATE"
    buy = {"environmentId": environment.id, "amount": "1000000000", "isBuy": True}
    traded = await ask(socket, {"type": "VIRTUAL_TRADE", "data": buy, "requestId": "t"})
    assert traded["type"] == "VIRTUAL_TRADE_EXECUTED" and traded["requestId"] == "t"
    assert (await ask(socket, start))["data"]["code"] == "RATE_LIMITED"

    building.set()
    assert await sync_to_async(readiness.recogniser.wait)(60)
    ready = await ask(socket, start)
    assert ready["type"] == "VOICE_SESSION_READY" and ready["requestId"] == "v"
    session_id = ready["data"]["sessionId"]
    for frame in chunks(silence(0.3) + speak("what is the price") + silence(0.2)):
        await socket.send_to(bytes_data=frame)
    stop = {"type": "VOICE_AUDIO_END", "data": {"sessionId": session_id}, "requestId": "end"}
    await socket.send_to(text_data=json.dumps(stop))
    messages = await until_answered(socket, "end")
    commands = [m["data"] for m in messages if m["type"] == "VOICE_COMMAND"]
    assert commands[0]["intent"] == "MARKET_ANALYSIS"
    await socket.disconnect()
    await watcher.disconnect()


async def test_a_process_that_did_not_preload_starts_with_its_first_voice_session(
    alice, monkeypatch
):
    started, go_on = threading.Event(), threading.Event()

    def prepare(recogniser: Recogniser) -> None:
        started.set()
        go_on.wait(timeout=60)
        readiness.prepare_models(recogniser)

    recogniser = Recogniser(prepare)
    monkeypatch.setattr(readiness, "recogniser", recogniser)
    assert recogniser.phase is Phase.IDLE
    socket = await open_socket(alice)
    start = {"type": "VOICE_SESSION_START", "data": {"userId": alice.address}}
    refused = await ask(socket, start)
    assert refused["data"]["code"] == "RATE_LIMITED"
    assert refused["data"]["details"] == {"retryAfterMs": 1000}  # loading, not building
    assert started.wait(timeout=10)
    go_on.set()
    assert await sync_to_async(recogniser.wait)(60)
    assert (await ask(socket, start))["type"] == "VOICE_SESSION_READY"
    await socket.disconnect()


async def test_a_start_waits_for_a_recogniser_that_is_ready_within_the_wait(alice, monkeypatch):
    """Loading the cached model after startup takes seconds: a start in that time is served."""
    release = threading.Event()

    def prepare(recogniser: Recogniser) -> None:
        release.wait(timeout=60)
        readiness.prepare_models(recogniser)

    monkeypatch.setattr(readiness, "recogniser", Recogniser(prepare))
    monkeypatch.setattr(session, "READY_WAIT", 30.0)
    socket = await open_socket(alice)
    start = {"type": "VOICE_SESSION_START", "data": {"userId": alice.address}}
    await socket.send_to(text_data=json.dumps(start))
    assert await socket.receive_nothing(timeout=0.3)  # waiting, not refused
    release.set()
    ready = json.loads(await socket.receive_from(timeout=20))
    assert ready["type"] == "VOICE_SESSION_READY"
    await socket.disconnect()


async def test_a_model_that_cannot_be_made_ready_leaves_voice_to_pocketsphinx(alice, monkeypatch):
    def broken(recogniser: Recogniser) -> None:
        raise RuntimeError("the model files are damaged")

    recogniser = Recogniser(broken)
    monkeypatch.setattr(readiness, "recogniser", recogniser)
    assert await sync_to_async(recogniser.wait)(10)
    assert recogniser.failed()
    readiness.default_engine.cache_clear()
    try:
        assert isinstance(readiness.default_engine(), engines.SphinxEngine)
        socket = await open_socket(alice)
        start = {"type": "VOICE_SESSION_START", "data": {"userId": alice.address}}
        session_id = (await ask(socket, start))["data"]["sessionId"]
        for frame in chunks(silence(0.3) + speak("buy two sol") + silence(0.2)):
            await socket.send_to(bytes_data=frame)
        stop = {"type": "VOICE_AUDIO_END", "data": {"sessionId": session_id}, "requestId": "e"}
        await socket.send_to(text_data=json.dumps(stop))
        messages = await until_answered(socket, "e")
        [answer] = [m for m in messages if m.get("requestId") == "e"]
        assert answer["data"]["text"] == "buy two sol"
        await socket.disconnect()
    finally:
        readiness.default_engine.cache_clear()


def test_a_recogniser_is_made_ready_once():
    calls: list[int] = []
    recogniser = Recogniser(lambda r: calls.append(1))
    for _ in range(3):
        recogniser.start()
    assert recogniser.wait(10) and recogniser.ready()
    assert calls == [1] and recogniser.phase is Phase.READY
