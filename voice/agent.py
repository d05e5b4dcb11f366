"""The LiveKit voice agent: hears each open session's microphone, answers on the user's socket.

The agent runs as its own process (``manage.py run_voice_agent``). :class:`VoiceAgent` polls the
database for open sessions and keeps one :class:`SessionAgent` per session: it joins the
session's room hidden (``voice.livekit.agent_token``), subscribes to the audio of the participant
whose identity is the session's wallet, and feeds it to the same :class:`~voice.session.VoiceRunner`
as the socket path. The runner's messages are handed to the socket servers through the channel
layer (``kernel.realtime.signal`` on the session's key), where the consumer holding the session
pushes them to the user's socket.

The audio path (:func:`feed_frames`) is plain code over ``rtc.AudioFrame``s: LiveKit frames of
any rate and channel count become 16 kHz mono PCM16 in 100 ms chunks. The network part (room,
tracks, reconnects) is kept thin, with the room and the frame source injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
from django.conf import settings
from django.utils import timezone
from livekit import rtc

from kernel.db import db_call
from kernel.realtime import signal, voice_key
from protocol.errors import DomainError
from voice.livekit import agent_token
from voice.selectors import OpenSession, open_sessions
from voice.session import SessionInfo, VoiceRunner
from voice.speech.engines import BYTES_PER_SECOND, SAMPLE_RATE

logger = logging.getLogger(__name__)

SOURCE = "livekit"  # VoiceCommand.source of what the agent heard
CHUNK_BYTES = BYTES_PER_SECOND // 10  # 100 ms per runner.audio call, as the socket client sends
TRAILING_SILENCE = 0.5  # seconds fed after a track ends, so the VAD finishes a cut-off utterance
MIN_RATE, MAX_RATE, MAX_CHANNELS = 8_000, 192_000, 8  # beyond these a frame is garbage
LEAVE_TIMEOUT = 10.0  # seconds the supervisor waits for a cancelled session to leave its room
STABLE_AFTER = 60.0  # seconds connected after which a room failure starts the backoff afresh


# --- the audio path ---------------------------------------------------------------------------


class PcmConverter:
    """``rtc.AudioFrame``s of any sample rate and channel count to 16 kHz mono PCM16 bytes.

    Frames already at 16 kHz mono pass through as they are. Others go through one
    ``rtc.AudioResampler`` (kept across frames: it buffers a few samples between calls), then are
    averaged down to one channel. A change of format mid-stream flushes the old resampler first.
    """

    def __init__(self) -> None:
        self.format: tuple[int, int] | None = None
        self.resampler: rtc.AudioResampler | None = None
        self.held = b""  # the previous format's tail, until a frame of the new one converts

    def convert(self, frame: rtc.AudioFrame) -> bytes:
        """The frame's audio (and what the resampler released); raises on a frame it cannot take."""
        rate, channels = frame.sample_rate, frame.num_channels
        if not (MIN_RATE <= rate <= MAX_RATE and 1 <= channels <= MAX_CHANNELS):
            raise ValueError(f"unusable audio frame: {rate} Hz, {channels} channel(s)")
        if (rate, channels) != self.format:
            self.held = self.flush()  # flush() includes what was held already
            self.format = (rate, channels)
            if rate != SAMPLE_RATE:
                self.resampler = rtc.AudioResampler(rate, SAMPLE_RATE, num_channels=channels)
        if self.resampler is None:
            pcm = _mono(frame)
        else:
            try:
                pcm = b"".join(_mono(out) for out in self.resampler.push(frame))
            except Exception:
                # Its state is unknown now: the next frame gets a new one.
                self.resampler = self.format = None
                raise
        held, self.held = self.held, b""
        return held + pcm

    def flush(self) -> bytes:
        """What is still held back (end of stream, or a change of format)."""
        resampler, self.resampler, self.format = self.resampler, None, None
        held, self.held = self.held, b""
        if resampler is None:
            return held
        return held + b"".join(_mono(out) for out in resampler.flush())


def _mono(frame: rtc.AudioFrame) -> bytes:
    """The frame's samples as PCM16 bytes, its channels averaged into one."""
    channels = frame.num_channels
    size = frame.samples_per_channel * channels * 2
    raw = frame.data.cast("B")[:size].tobytes()
    if channels == 1:
        return raw
    samples = np.frombuffer(raw, dtype=np.int16).reshape(-1, channels)
    mono: bytes = (samples.sum(axis=1, dtype=np.int32) // channels).astype(np.int16).tobytes()
    return mono


async def feed_frames(runner: VoiceRunner, frames: AsyncIterable[rtc.AudioFrame]) -> None:
    """Feed a track's frames to ``runner`` as 16 kHz mono PCM16, in 100 ms chunks.

    A frame that cannot be converted is dropped (and logged), never the stream. Audio the runner
    refuses (over the session's audio budget) is dropped: LiveKit audio arrives in real time, so a
    refusal means the recogniser is behind, and the next chunks are taken again once it catches
    up. When the frames end, the utterance in progress (if any) is finished by trailing silence.
    """
    converter = PcmConverter()
    pending = bytearray()
    refused = False
    broken = False

    def send(pcm: bytes) -> None:
        nonlocal refused
        try:
            runner.audio(pcm)
        except DomainError as exc:
            if not refused:
                logger.warning(
                    "voice session %s: audio dropped (%s)", runner.session.id, exc.message
                )
            else:
                logger.debug("voice session %s: audio dropped again", runner.session.id)
            refused = True

    async for frame in frames:
        try:
            pending += converter.convert(frame)
        except Exception:
            if not broken:
                logger.exception("voice session %s: an audio frame was dropped", runner.session.id)
            broken = True
            continue
        if len(pending) >= CHUNK_BYTES:
            send(bytes(pending))
            pending.clear()
    try:
        pending += converter.flush()
    except Exception:
        logger.exception("voice session %s: resampler flush failed", runner.session.id)
    pending += bytes(int(BYTES_PER_SECOND * TRAILING_SILENCE))
    send(bytes(pending))


async def track_frames(track: rtc.Track) -> AsyncIterator[rtc.AudioFrame]:
    """A subscribed track's audio, as LiveKit's 16 kHz mono stream of it (resampled natively)."""
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    try:
        async for event in stream:
            yield event.frame
    finally:
        await stream.aclose()


# --- one session --------------------------------------------------------------------------------


def session_runner(session: SessionInfo) -> VoiceRunner:
    """A runner whose messages reach the session's socket, in whichever process it is."""
    key = voice_key(session.id)

    async def deliver(frame: str) -> None:
        try:
            await signal(key, {"frame": frame})
        except Exception as exc:
            # A lost message is not worth the session: the next utterance gets through again.
            logger.warning("voice session %s: could not deliver a message: %r", session.id, exc)

    return VoiceRunner(session, deliver, source=SOURCE)


class Room(Protocol):
    """What the agent uses of ``rtc.Room`` (a test passes a fake one)."""

    def on(self, event: Any, callback: Callable[..., Any] | None = None) -> Callable[..., Any]: ...

    async def connect(self, url: str, token: str) -> None: ...

    async def disconnect(self) -> None: ...


RoomFactory = Callable[[], Room]
FrameSource = Callable[[Any], AsyncIterable[rtc.AudioFrame]]


class RoomLost(RuntimeError):
    """The room disconnected, or the track's audio failed, while the session was open."""


class SessionAgent:
    """The agent in one session's room, listening to the session's wallet only."""

    def __init__(self, session: OpenSession, *, frames: FrameSource = track_frames) -> None:
        self.session = session
        self.frames = frames
        self.connected_at: float | None = None  # loop time of the last successful connect

    async def run(self, room_factory: RoomFactory = rtc.Room) -> None:
        """Listen until the session's token expires; raise :class:`RoomLost` if the room fails.

        Cancel the task to stop earlier (the session ended). Either way the room is left and the
        runner closed.
        """
        session = self.session
        remaining = (session.expires_at - timezone.now()).total_seconds()
        if remaining <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + remaining
        runner = session_runner(SessionInfo(session.id, session.wallet, session.environment_id))
        room = room_factory()
        lost = asyncio.Event()
        feeds: dict[str, asyncio.Task[None]] = {}

        def fed(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                logger.error(
                    "voice session %s: audio track failed",
                    session.id,
                    exc_info=task.exception(),
                )
                lost.set()

        def subscribed(track: Any, publication: Any, participant: Any) -> None:
            if participant.identity != session.wallet or track.kind != rtc.TrackKind.KIND_AUDIO:
                return
            previous = feeds.pop(track.sid, None)
            if previous is not None:
                previous.cancel()
            task = asyncio.create_task(self._listen(runner, track))
            task.add_done_callback(fed)
            feeds[track.sid] = task
            logger.info("voice session %s: listening to track %s", session.id, track.sid)

        def unsubscribed(track: Any, publication: Any, participant: Any) -> None:
            task = feeds.pop(getattr(track, "sid", ""), None)
            if task is not None:
                task.cancel()

        def disconnected(*reason: Any) -> None:
            lost.set()

        room.on("track_subscribed", subscribed)
        room.on("track_unsubscribed", unsubscribed)
        room.on("disconnected", disconnected)
        try:
            await runner.start()
            token = agent_token(
                room=session.room, now=timezone.now(), ttl=timedelta(seconds=remaining)
            )
            await room.connect(settings.LIVEKIT_URL, token.jwt)
            self.connected_at = loop.time()
            logger.info("voice session %s: joined room %s", session.id, session.room)
            try:
                await asyncio.wait_for(lost.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return  # the session's token expired: so did the session
            raise RoomLost(f"room {session.room} disconnected")
        finally:
            for task in feeds.values():
                task.cancel()
            await asyncio.gather(*feeds.values(), return_exceptions=True)
            try:
                await room.disconnect()
            except Exception as exc:
                logger.warning("voice session %s: leaving the room failed: %r", session.id, exc)
            await runner.close()

    async def _listen(self, runner: VoiceRunner, track: Any) -> None:
        frames = self.frames(track)
        try:
            await feed_frames(runner, frames)
        finally:
            close = getattr(frames, "aclose", None)
            if close is not None:
                await close()  # the track's AudioStream, now rather than when collected


# --- the supervisor -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Running:
    agent: SessionAgent
    task: asyncio.Task[None]


class VoiceAgent:
    """Keeps one :class:`SessionAgent` per open session, at most ``max_sessions`` at a time.

    Every ``poll`` seconds it reads the open sessions, starts agents for new ones, cancels those
    whose session ended or expired, and restarts a failed one after a backoff (doubling from
    ``backoff`` up to ``max_backoff`` seconds).
    """

    def __init__(
        self,
        *,
        poll: float = 1.0,
        max_sessions: int = 100,
        room_factory: RoomFactory = rtc.Room,
        frames: FrameSource = track_frames,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.poll = poll
        self.max_sessions = max_sessions
        self.room_factory = room_factory
        self.frames = frames
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.running: dict[str, _Running] = {}
        self.failures: dict[str, tuple[int, float]] = {}  # session -> (failures, retry at)
        self.finished: set[str] = set()  # ran until their token expired
        self.waiting = 0  # open sessions left out by max_sessions at the last poll

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until ``stop`` is set (or the task is cancelled), then stop every session."""
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except Exception:
                    logger.exception("voice agent: poll failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll)
        finally:
            await self.close()

    async def step(self) -> None:
        """One poll: reap, cancel, start."""
        sessions = await db_call(open_sessions)(now=timezone.now())
        wanted = {session.id: session for session in sessions}
        now = asyncio.get_running_loop().time()
        self._reap(now)
        gone = [self.running.pop(key) for key in list(self.running) if key not in wanted]
        for running in gone:
            running.task.cancel()
        if gone:
            # Bounded: one room slow to leave must not hold up every other session.
            await _settle([running.task for running in gone])
            logger.info("voice agent: left %d ended session(s)", len(gone))
        self.failures = {key: value for key, value in self.failures.items() if key in wanted}
        self.finished &= wanted.keys()
        waiting = 0
        for session in sessions:
            if session.id in self.running or session.id in self.finished:
                continue
            if self.failures.get(session.id, (0, 0.0))[1] > now:
                continue
            if len(self.running) >= self.max_sessions:
                waiting += 1
                continue
            agent = SessionAgent(session, frames=self.frames)
            task = asyncio.create_task(agent.run(self.room_factory), name=f"voice-{session.id}")
            self.running[session.id] = _Running(agent, task)
        if waiting and waiting != self.waiting:
            logger.warning(
                "voice agent: %d open session(s) wait for a slot (--max-sessions %d)",
                waiting,
                self.max_sessions,
            )
        self.waiting = waiting

    def _reap(self, now: float) -> None:
        """Forget finished agents; schedule a retry of failed ones."""
        for key, running in list(self.running.items()):
            task = running.task
            if not task.done():
                continue
            del self.running[key]
            if task.cancelled():
                continue
            error = task.exception()
            if error is None:
                self.finished.add(key)
                continue
            connected_at = running.agent.connected_at
            stable = connected_at is not None and now - connected_at >= STABLE_AFTER
            failures = 1 if stable else self.failures.get(key, (0, 0.0))[0] + 1
            delay = min(self.max_backoff, self.backoff * 2 ** (failures - 1))
            self.failures[key] = (failures, now + delay)
            logger.warning(
                "voice session %s: %r; joining again in %.1fs",
                key,
                error,
                delay,
                exc_info=None if isinstance(error, RoomLost | rtc.ConnectError) else error,
            )

    async def close(self) -> None:
        """Leave every room."""
        running, self.running = list(self.running.values()), {}
        for item in running:
            item.task.cancel()
        await _settle([item.task for item in running])


async def _settle(tasks: list[asyncio.Task[None]]) -> None:
    """Wait (a bounded time) for cancelled sessions to leave their rooms; their errors are moot."""
    if not tasks:
        return
    done, _ = await asyncio.wait(tasks, timeout=LEAVE_TIMEOUT)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as lost
