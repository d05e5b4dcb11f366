"""The LiveKit voice agent: its audio path into a user's socket, its supervisor, its command.

No LiveKit server runs here: frames are ``rtc.AudioFrame``s built from synthesised speech, and
the supervisor's rooms are fakes that record what the agent asked of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import AsyncIterator, Callable
from io import StringIO
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from livekit import api, rtc

from kernel.db import db_call
from protocol.errors import DomainError, ErrorCode
from tests.conftest import Wallet, open_socket
from tests.voice.speech import silence, speak
from voice import agent as voice_agent
from voice.agent import OpenSession, PcmConverter, VoiceAgent, feed_frames, session_runner
from voice.models import VoiceCommand, VoiceSession
from voice.services import voice_session_end, voice_session_start
from voice.session import SessionInfo

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("voice_ready")]

QUESTION = "what is the price"


# --- helpers ----------------------------------------------------------------------------------


async def ask(socket, frame: dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps(frame))
    return json.loads(await socket.receive_from(timeout=10))


async def voice_socket(wallet: Wallet, environment) -> tuple[Any, str]:
    """A socket in ``environment`` with a voice session started; the session's id."""
    socket = await open_socket(wallet)
    join = {"environmentId": environment.id, "userId": wallet.address}
    joined = await ask(socket, {"type": "JOIN_ENVIRONMENT", "data": join})
    assert joined["type"] == "ENVIRONMENT_STATE", joined
    ready = await ask(socket, {"type": "VOICE_SESSION_START", "data": {"userId": wallet.address}})
    assert ready["type"] == "VOICE_SESSION_READY", ready
    return socket, ready["data"]["sessionId"]


async def until_response(socket) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while not messages or messages[-1]["type"] not in ("VOICE_RESPONSE", "ERROR"):
        messages.append(json.loads(await socket.receive_from(timeout=30)))
    return messages


def upsampled_stereo(pcm16k: bytes) -> bytes:
    """16 kHz mono PCM16 as 48 kHz stereo: sox upsamples, each sample is then duplicated."""
    command = ["sox", "-t", "raw", "-r", "16000", "-e", "signed-integer", "-b", "16", "-c", "1"]
    command += ["-", "-t", "raw", "-r", "48000", "-e", "signed-integer", "-b", "16", "-c", "1"]
    mono = subprocess.run([*command, "-"], input=pcm16k, check=True, capture_output=True).stdout
    return np.repeat(np.frombuffer(mono, dtype=np.int16), 2).tobytes()


def audio_frames(pcm: bytes, *, rate: int, channels: int, ms: int = 20) -> list[rtc.AudioFrame]:
    """PCM16 cut into LiveKit frames of ``ms`` milliseconds."""
    samples = rate * ms // 1000
    size = samples * channels * 2
    frames = []
    for start in range(0, len(pcm), size):
        chunk = pcm[start : start + size]
        frames.append(rtc.AudioFrame(chunk, rate, channels, len(chunk) // (2 * channels)))
    return frames


async def stream(frames: list[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    for frame in frames:
        yield frame
        await asyncio.sleep(0)


def spoken(text: str) -> bytes:
    return silence(0.3) + speak(text) + silence(0.8)


def assert_answered(messages: list[dict[str, Any]], session_id: str) -> None:
    kinds = [m["type"] for m in messages]
    assert kinds[-3:] == ["VOICE_TRANSCRIPTION", "VOICE_COMMAND", "VOICE_RESPONSE"], messages
    assert all(kind == "VOICE_TRANSCRIPTION" for kind in kinds[:-2])
    assert all(m["data"]["sessionId"] == session_id for m in messages)
    assert messages[-3]["data"] == {"text": QUESTION, "isFinal": True, "sessionId": session_id}
    assert all(not m["data"]["isFinal"] for m in messages[:-3])
    command = messages[-2]["data"]
    assert command["intent"] == "MARKET_ANALYSIS"
    assert command["parameters"] == {"metric": "price"}
    assert 0.5 < command["confidence"] <= 1
    assert "SOL" in messages[-1]["data"]["text"], messages[-1]


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class FakeRoom(rtc.EventEmitter[str]):
    """An ``rtc.Room`` stand-in: records the connection, emits what a test tells it to."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.url: str | None = None
        self.token: str | None = None
        self.connected = False
        self.left = False

    async def connect(self, url: str, token: str) -> None:
        if self.fail:
            raise rtc.ConnectError("no LiveKit server here")
        self.url, self.token, self.connected = url, token, True

    async def disconnect(self) -> None:
        if self.connected:
            self.connected, self.left = False, True
            self.emit("disconnected", "CLIENT_INITIATED")


class Rooms:
    """A room factory handing out fake rooms (failing ones first, if asked)."""

    def __init__(self, failing: int = 0) -> None:
        self.made: list[FakeRoom] = []
        self.failing = failing

    def __call__(self) -> FakeRoom:
        room = FakeRoom(fail=len(self.made) < self.failing)
        self.made.append(room)
        return room


class Track:
    def __init__(self, sid: str, kind: int = rtc.TrackKind.KIND_AUDIO) -> None:
        self.sid, self.kind = sid, kind


class Participant:
    def __init__(self, identity: str) -> None:
        self.identity = identity


async def start_session(wallet: str) -> OpenSession:
    started = await db_call(voice_session_start)(
        wallet=wallet, language="en-US", environment_id=None
    )
    row = await VoiceSession.objects.aget(pk=started.id)
    return OpenSession(row.id, row.wallet, row.room, row.environment_id, row.expires_at)


# --- the audio path ---------------------------------------------------------------------------


async def test_livekit_frames_are_heard_and_answered_on_the_users_socket(alice, environment):
    socket, session_id = await voice_socket(alice, environment)
    runner = session_runner(SessionInfo(session_id, alice.address, environment.id))
    await runner.start()
    try:
        await feed_frames(runner, stream(audio_frames(spoken(QUESTION), rate=16_000, channels=1)))
        messages = await until_response(socket)
    finally:
        await runner.close()
    assert_answered(messages, session_id)
    heard = await VoiceCommand.objects.aget(session_id=session_id)
    assert heard.source == "livekit" and heard.text == QUESTION
    assert heard.intent == "MARKET_ANALYSIS"
    await socket.disconnect()


async def test_the_agent_hears_48khz_stereo_from_the_sessions_wallet_only(alice, bob, environment):
    socket, session_id = await voice_socket(alice, environment)
    row = await VoiceSession.objects.aget(pk=session_id)
    session = OpenSession(row.id, row.wallet, row.room, row.environment_id, row.expires_at)
    stereo = audio_frames(upsampled_stereo(spoken(QUESTION)), rate=48_000, channels=2)
    asked: list[str] = []

    def frames(track: Track) -> AsyncIterator[rtc.AudioFrame]:
        asked.append(track.sid)
        return stream(stereo)

    rooms = Rooms()
    agent = voice_agent.SessionAgent(session, frames=frames)
    task = asyncio.create_task(agent.run(rooms))
    await wait_until(lambda: bool(rooms.made) and rooms.made[0].connected)
    room = rooms.made[0]
    room.emit("track_subscribed", Track("TR_bob"), None, Participant(bob.address))
    room.emit("track_subscribed", Track("TR_video", kind=2), None, Participant(alice.address))
    room.emit("track_subscribed", Track("TR_alice"), None, Participant(alice.address))
    messages = await until_response(socket)
    assert asked == ["TR_alice"]
    assert_answered(messages, session_id)
    heard = await VoiceCommand.objects.aget(session_id=session_id)
    assert heard.source == "livekit"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert room.left
    await socket.disconnect()


async def test_the_real_audio_stream_of_a_track_is_heard(alice, environment):
    """``rtc.AudioStream`` (the agent's frame source) over a local track fed 48 kHz stereo."""
    socket, session_id = await voice_socket(alice, environment)
    source = rtc.AudioSource(48_000, 2)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    runner = session_runner(SessionInfo(session_id, alice.address, environment.id))
    await runner.start()
    feeding = asyncio.create_task(feed_frames(runner, voice_agent.track_frames(track)))
    try:
        for frame in audio_frames(upsampled_stereo(spoken(QUESTION)), rate=48_000, channels=2):
            await source.capture_frame(frame)
        messages = await until_response(socket)
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        await runner.close()
        await source.aclose()
    assert_answered(messages, session_id)
    await socket.disconnect()


class Collector:
    """A runner stand-in for the audio path alone."""

    def __init__(self, refuse: bool = False) -> None:
        self.session = SessionInfo("vs_test", "wallet", None)
        self.pcm = bytearray()
        self.calls = 0
        self.refuse = refuse

    def audio(self, pcm: bytes) -> None:
        self.calls += 1
        if self.refuse:
            raise DomainError(ErrorCode.RATE_LIMITED, "audio arrives faster than it is heard")
        self.pcm += pcm


async def test_frames_of_any_format_become_16khz_mono_and_a_bad_frame_is_dropped(caplog):
    tone = (np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000) * 8000).astype(np.int16)
    frames = [
        *audio_frames(np.repeat(tone, 2).tobytes(), rate=48_000, channels=2),  # 1 s stereo
        rtc.AudioFrame(bytes(4), 0, 1, 2),  # a rate the resampler refuses
        *audio_frames(bytes(16_000 * 2), rate=16_000, channels=1),  # 1 s, as it is
        *audio_frames(bytes(44_100 * 2 * 2), rate=44_100, channels=2),  # 1 s
    ]
    runner = Collector()
    with caplog.at_level(logging.WARNING, logger="voice.agent"):
        await feed_frames(runner, stream(frames))  # type: ignore[arg-type]
    trailing = int(16_000 * voice_agent.TRAILING_SILENCE)
    samples = len(runner.pcm) // 2 - trailing
    assert abs(samples - 3 * 16_000) < 200  # resamplers may hold back a few samples
    assert runner.calls <= 3 * 10 + 2  # 100 ms chunks, not one call per 20 ms frame
    assert [r.levelname for r in caplog.records].count("ERROR") == 1
    heard = np.frombuffer(bytes(runner.pcm[: 16_000 * 2]), dtype=np.int16)
    assert 4000 < np.abs(heard[1000:15_000]).max() <= 8001  # the tone, downmixed, not doubled


async def test_refused_audio_is_dropped_with_one_warning(caplog):
    runner = Collector(refuse=True)
    frames = audio_frames(bytes(16_000 * 2), rate=16_000, channels=1)
    with caplog.at_level(logging.WARNING, logger="voice.agent"):
        await feed_frames(runner, stream(frames))  # type: ignore[arg-type]
    assert runner.calls > 5
    assert len([r for r in caplog.records if "audio dropped" in r.getMessage()]) == 1


def test_converter_flushes_when_the_format_changes():
    converter = PcmConverter()
    out = b"".join(
        converter.convert(frame)
        for frame in audio_frames(bytes(48_000 * 2), rate=48_000, channels=1)
    )
    out += converter.convert(rtc.AudioFrame(bytes(320), 16_000, 1, 160))
    assert converter.flush() == b""
    assert abs(len(out) // 2 - (16_000 + 160)) < 50


# --- the supervisor ---------------------------------------------------------------------------


async def test_the_supervisor_joins_open_sessions_hidden_and_leaves_ended_ones(
    make_wallet: Callable[[], Wallet],
):
    open_one = await start_session(make_wallet().address)
    ended_one = await start_session(make_wallet().address)
    await db_call(voice_session_end)(
        session_id=ended_one.id, wallet=ended_one.wallet, reason="client"
    )
    rooms = Rooms()
    agent = VoiceAgent(poll=0.05, room_factory=rooms)
    try:
        await agent.step()
        assert set(agent.running) == {open_one.id}
        await wait_until(lambda: bool(rooms.made) and rooms.made[0].connected)
        room = rooms.made[0]
        assert room.url == settings.LIVEKIT_URL
        claims = api.TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET).verify(
            room.token
        )
        assert claims.video.room == open_one.room
        assert claims.video.room_join and claims.video.can_subscribe
        assert claims.video.hidden and claims.video.agent
        assert not claims.video.can_publish and not claims.video.can_publish_data
        assert claims.identity == f"funpump-agent-{open_one.room}"

        await agent.step()  # nothing changed: the same room, no second join
        assert len(rooms.made) == 1 and room.connected

        await db_call(voice_session_end)(
            session_id=open_one.id, wallet=open_one.wallet, reason="client"
        )
        await agent.step()
        assert agent.running == {}
        assert room.left
        assert len(rooms.made) == 1
    finally:
        await agent.close()


async def test_a_failed_room_is_joined_again_after_a_backoff(alice):
    session = await start_session(alice.address)
    rooms = Rooms(failing=1)
    agent = VoiceAgent(room_factory=rooms, backoff=0.2, max_backoff=1.0)
    try:
        await agent.step()
        await wait_until(lambda: agent.running[session.id].task.done())
        await agent.step()  # the failure is seen: a retry is due in 0.2 s, not now
        assert session.id not in agent.running and len(rooms.made) == 1
        await asyncio.sleep(0.25)
        await agent.step()
        await wait_until(lambda: len(rooms.made) == 2 and rooms.made[1].connected)

        rooms.made[1].emit("disconnected", "SIGNAL_CLOSE")  # the server dropped us
        await wait_until(lambda: agent.running[session.id].task.done())
        await agent.step()
        assert session.id not in agent.running  # backoff again before rejoining
        await asyncio.sleep(0.45)  # second failure in a row: 0.4 s
        await agent.step()
        await wait_until(lambda: len(rooms.made) == 3 and rooms.made[2].connected)
    finally:
        await agent.close()
    assert rooms.made[2].left


async def test_the_supervisor_listens_to_at_most_max_sessions(make_wallet):
    first = await start_session(make_wallet().address)
    second = await start_session(make_wallet().address)
    rooms = Rooms()
    agent = VoiceAgent(room_factory=rooms, max_sessions=1)
    try:
        await agent.step()
        assert set(agent.running) == {first.id}
        await db_call(voice_session_end)(session_id=first.id, wallet=first.wallet, reason="client")
        await agent.step()
        assert set(agent.running) == {second.id}
    finally:
        await agent.close()


async def test_run_stops_when_told_and_leaves_every_room(alice):
    await start_session(alice.address)
    rooms = Rooms()
    agent = VoiceAgent(poll=0.05, room_factory=rooms)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await wait_until(lambda: bool(rooms.made) and rooms.made[0].connected)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert rooms.made[0].left and agent.running == {}


# --- the command ------------------------------------------------------------------------------


def test_the_command_refuses_to_start_without_redis(settings):
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="REDIS_URL"):
        call_command("run_voice_agent")


def test_the_command_runs_the_agent_with_its_options(settings, monkeypatch):
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    made: list[dict[str, Any]] = []

    class Agent:
        def __init__(self, **options: Any) -> None:
            made.append(options)

        async def run(self, stop: asyncio.Event) -> None:
            assert not stop.is_set()
            assert recogniser.ready()  # made ready before the agent ran

    from voice.management.commands import run_voice_agent
    from voice.speech.recogniser import Recogniser

    recogniser = Recogniser(lambda recogniser: None)
    monkeypatch.setattr(run_voice_agent, "recogniser", recogniser)
    monkeypatch.setattr(run_voice_agent, "VoiceAgent", Agent)
    output = StringIO()
    call_command("run_voice_agent", "--poll", "0.5", "--max-sessions", "7", stdout=output)
    assert made == [{"poll": 0.5, "max_sessions": 7}]
    assert "up to 7 session(s)" in output.getvalue() and "Stopped." in output.getvalue()
    with pytest.raises(CommandError, match="--poll"):
        call_command("run_voice_agent", "--poll", "0")
