"""Speech recognition in its own process: ``FUNPUMP_SPEECH=worker``.

The speech models take about 330 MB per process that loads them. With speech in a worker, web
processes never load them: a web process forwards each session's audio over the channel layer to a
Channels worker (``python manage.py runworker voice-speech``), which runs the same
:class:`~voice.session.VoiceRunner` as a web process does inline and sends every frame it makes
back to the session's socket through the signal bus (``kernel.realtime.signal`` on the session's
``voice_key``), as the LiveKit agent does.

* **Finding a worker.** ``VOICE_SESSION_START`` pings the ``voice-speech`` channel
  (:func:`require_worker`); whichever worker takes the ping answers on the signal bus with its
  own channel once its recogniser is ready (a worker starts making it ready on its first ping).
  No answer within ``READY_WAIT`` seconds, or a worker still getting ready, is ``RATE_LIMITED``
  with ``retryAfterMs``, as a web process's own recogniser is while it gets ready. Several workers
  share the pings; a session's audio then goes to the worker that answered, so one recognition
  stream hears all of it, in order.
* **Bounds.** The web process checks the audio as it does inline (even byte counts, the session's
  audio budget) and queues at most ``QUEUE_LIMIT`` chunks of at most ``CHUNK_BYTES`` per session;
  past that the client is told to slow down (``RATE_LIMITED``). A full layer channel is waited
  out, never dropped: the session's queue fills meanwhile. The worker's runner bounds its own
  queue the same way.
* **Answers.** Every ``VOICE_AUDIO_END`` is answered: by the worker's final, or by an
  ``INTERNAL_ERROR`` carrying its ``requestId`` when it could not be handed to the worker, or
  when the worker goes silent (``ANSWER_WAIT`` seconds without a frame while an end waits for
  its final: the worker died or lost the session).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections import deque
from typing import Any

from channels.consumer import AsyncConsumer
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

import protocol
from kernel.realtime import Hub, signal, voice_key
from protocol.errors import DomainError, ErrorCode
from voice.livekit import livekit_secret
from voice.session import (
    QUEUE_LIMIT,
    READY_WAIT,
    AudioBudget,
    Deliver,
    SessionInfo,
    VoiceRunner,
    admit_audio,
    too_fast,
)
from voice.speech.recogniser import recogniser

logger = logging.getLogger(__name__)

CHANNEL = "voice-speech"  # the channel every speech worker listens on (runworker voice-speech)
CHUNK_BYTES = 16_000  # half a second of audio per layer message, far below any message limit
PING_EVERY = 0.5  # seconds a ping waits for its answer before the next one
FULL_RETRY = 0.05  # seconds before a message for a full channel is offered again
SEND_TIMEOUT = 5.0  # seconds a message waits for room in a full channel before it is given up
# Seconds without any frame from the worker while a VOICE_AUDIO_END waits for its final, after
# which the worker is taken for lost. Recognition sends interims as it goes and answers an end
# within about a second of reaching it, so this is generous even behind a full queue.
ANSWER_WAIT = 30.0


def _layer() -> BaseChannelLayer:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("FUNPUMP_SPEECH=worker needs a channel layer")
    return layer


async def require_worker(hub: Hub, connection: str) -> str:
    """The channel of a speech worker ready to listen, else ``RATE_LIMITED`` with
    ``retryAfterMs`` (see the module's docstring). The answer comes on the signal bus, which
    ``connection`` listens to through ``hub`` meanwhile, as it does to its session's frames."""
    livekit_secret()
    layer = _layer()
    reply = voice_key(f"ping-{uuid.uuid4().hex}")
    pongs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await hub.listen(reply, connection, pongs.put_nowait)
    try:
        retry_after_ms = 1000  # no worker answered at all
        deadline = time.monotonic() + READY_WAIT
        while True:
            try:
                await layer.send(CHANNEL, {"type": "speech.ping", "reply": reply})
                pong = await asyncio.wait_for(pongs.get(), PING_EVERY)
            except (ChannelFull, TimeoutError):
                pong = None
            if pong is not None and pong["worker"]:
                return str(pong["worker"])
            if pong is not None:
                retry_after_ms = int(pong["retryAfterMs"])
            if time.monotonic() >= deadline:
                raise DomainError(
                    ErrorCode.RATE_LIMITED,
                    "voice is starting up: try again shortly",
                    {"retryAfterMs": retry_after_ms},
                )
    finally:
        await hub.unlisten(reply, connection)


class RemoteRunner:
    """A web process's side of a session recognised by a worker: the same interface as
    :class:`~voice.session.VoiceRunner`, forwarding instead of listening."""

    def __init__(self, session: SessionInfo, worker: str, deliver: Deliver, *, expires_at: float):
        self.session = session
        self.worker = worker
        self.deliver = deliver
        self.expires_at = expires_at
        self.layer = _layer()
        self.budget = AudioBudget(
            settings.FUNPUMP_VOICE_AUDIO_RATE, settings.FUNPUMP_VOICE_AUDIO_BURST
        )
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.task: asyncio.Task[None] | None = None
        # The requestIds of the VOICE_AUDIO_ENDs sent whose final has not come back, in order
        # (the worker answers a session's ends in order), and the timer that gives up on them.
        self.unanswered: deque[str | None] = deque()
        self.silence: asyncio.TimerHandle | None = None
        self.answering: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        """Open the session on the worker, before any of its audio."""
        session = self.session
        await self._send(
            {
                "type": "speech.open",
                "session": session.id,
                "wallet": session.wallet,
                "environment": session.environment_id,
                "expires": self.expires_at,
            }
        )
        self.task = asyncio.create_task(self._pump())

    def audio(self, pcm: bytes) -> None:
        admit_audio(pcm, self.budget, self.session.id)
        chunks = [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]
        if self.queue.maxsize - self.queue.qsize() < len(chunks):
            raise too_fast(self.session.id, "audio is queued faster than it is recognised")
        for chunk in chunks:
            self.queue.put_nowait(
                {"type": "speech.audio", "session": self.session.id, "pcm": chunk}
            )

    def end_utterance(self, request_id: str | None = None) -> None:
        end = {"type": "speech.end", "session": self.session.id, "requestId": request_id}
        try:
            self.queue.put_nowait(end)
        except asyncio.QueueFull:
            raise too_fast(
                self.session.id, "audio is queued faster than it is recognised"
            ) from None
        self.unanswered.append(request_id)
        if self.silence is None:
            self._wait_for_worker()

    def heard(self, frame: str) -> None:
        """A frame of this session came back from the worker: it is alive, and a final (or an
        error answering an end) answers the oldest end still waiting."""
        if not self.unanswered:
            return
        message = json.loads(frame)
        data = message.get("data") or {}
        kind = message.get("type")
        answers_end = (kind == "VOICE_TRANSCRIPTION" and data.get("isFinal")) or (
            kind == "ERROR" and message.get("requestId") is not None
        )
        if answers_end:
            self.unanswered.popleft()
        self._wait_for_worker()

    def _wait_for_worker(self) -> None:
        if self.silence is not None:
            self.silence.cancel()
            self.silence = None
        if self.unanswered:
            loop = asyncio.get_running_loop()
            self.silence = loop.call_later(ANSWER_WAIT, self._worker_lost)

    def _worker_lost(self) -> None:
        """Nothing came back for ``ANSWER_WAIT`` seconds: answer every waiting end."""
        self.silence = None
        logger.warning("speech worker of session %s went silent", self.session.id)
        error = DomainError(ErrorCode.INTERNAL_ERROR, "the speech worker did not answer")
        while self.unanswered:
            sent = self.deliver(protocol.error_frame(error, self.unanswered.popleft()))
            if sent is not None:
                answer = asyncio.ensure_future(sent)
                self.answering.add(answer)
                answer.add_done_callback(self.answering.discard)

    async def close(self) -> None:
        """Stop forwarding and end the session on the worker; what is still queued is dropped."""
        if self.silence is not None:
            self.silence.cancel()
            self.silence = None
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        try:
            await self._send({"type": "speech.close", "session": self.session.id})
        except Exception:  # the worker ends it at its expiry anyway
            logger.warning("could not end voice session %s on its worker", self.session.id)

    async def _pump(self) -> None:
        while True:
            message = await self.queue.get()
            try:
                await self._send(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("forwarding audio of session %s failed", self.session.id)
                if message["type"] == "speech.end":  # every VOICE_AUDIO_END gets its answer
                    if message["requestId"] in self.unanswered:
                        self.unanswered.remove(message["requestId"])
                        self._wait_for_worker()
                    error = DomainError(ErrorCode.INTERNAL_ERROR, "internal error")
                    sent = self.deliver(protocol.error_frame(error, message["requestId"]))
                    if sent is not None:
                        await sent

    async def _send(self, message: dict[str, Any]) -> None:
        """Send to the session's worker, waiting out a full channel (up to ``SEND_TIMEOUT``)."""
        deadline = time.monotonic() + SEND_TIMEOUT
        while True:
            try:
                await self.layer.send(self.worker, message)
                return
            except ChannelFull:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(FULL_RETRY)


class SpeechConsumer(AsyncConsumer):  # type: ignore[misc]
    """A speech worker: ``python manage.py runworker voice-speech``.

    One instance takes the pings sent to ``voice-speech`` and every message of the sessions it
    answered for (on its own channel), and runs a :class:`~voice.session.VoiceRunner` per session
    until the web process closes it or it expires.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, VoiceRunner] = {}
        self.expiries: dict[str, asyncio.TimerHandle] = {}
        self.refused_at: dict[str, float] = {}

    async def speech_ping(self, message: dict[str, Any]) -> None:
        ready = recogniser.ready()  # the first ping starts making it ready
        pong = {
            "worker": self.channel_name if ready else None,
            "retryAfterMs": recogniser.phase.retry_after_ms,
        }
        await signal(message["reply"], pong)

    async def speech_open(self, message: dict[str, Any]) -> None:
        session_id = message["session"]
        info = SessionInfo(session_id, message["wallet"], message["environment"])
        runner = VoiceRunner(info, functools.partial(_deliver, session_id), source="socket")
        await runner.start()
        self.sessions[session_id] = runner
        self.expiries[session_id] = asyncio.get_running_loop().call_later(
            max(0.0, message["expires"] - time.time()),
            lambda: asyncio.ensure_future(self._close(session_id)),
        )

    async def speech_audio(self, message: dict[str, Any]) -> None:
        runner = self.sessions.get(message["session"])
        if runner is None:
            return  # closed or expired: its last audio is dropped, as inline
        try:
            runner.listen(message["pcm"])
        except DomainError as exc:
            # A flood gets one refusal a second, not one per chunk (as the consumer does).
            now = time.monotonic()
            if now - self.refused_at.get(runner.session.id, float("-inf")) >= 1:
                self.refused_at[runner.session.id] = now
                await _deliver(runner.session.id, protocol.error_frame(exc, None))

    async def speech_end(self, message: dict[str, Any]) -> None:
        session_id, request_id = message["session"], message["requestId"]
        runner = self.sessions.get(session_id)
        try:
            if runner is None:
                raise DomainError(ErrorCode.INTERNAL_ERROR, "internal error")
            runner.end_utterance(request_id)
        except DomainError as exc:
            await _deliver(session_id, protocol.error_frame(exc, request_id))

    async def speech_close(self, message: dict[str, Any]) -> None:
        await self._close(message["session"])

    async def _close(self, session_id: str) -> None:
        runner = self.sessions.pop(session_id, None)
        expiry = self.expiries.pop(session_id, None)
        self.refused_at.pop(session_id, None)
        if expiry is not None:
            expiry.cancel()
        if runner is not None:
            await runner.close()


async def _deliver(session_id: str, frame: str) -> None:
    """A frame for the session's socket, wherever its web process is."""
    await signal(voice_key(session_id), {"frame": frame})
