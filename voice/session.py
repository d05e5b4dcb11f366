"""One voice session at work: audio in, recognition on a worker thread, messages out.

Both audio paths use :class:`VoiceRunner`: the socket consumer feeds it binary frames, the
LiveKit agent feeds it the user's microphone track. The runner queues audio, runs the
session's :class:`~voice.speech.pipeline.Listener` on a worker thread (recognition never blocks the
event loop) one step at a time (results keep their order), and turns results into messages:
``VOICE_TRANSCRIPTION`` (interim, then final), ``VOICE_COMMAND`` and ``VOICE_RESPONSE``, each
carrying ``sessionId``, handed to ``deliver`` as encoded frames. The final that answers a
``VOICE_AUDIO_END`` carries its ``requestId``.

Recognition needs this process's recogniser ready (:mod:`voice.speech.recogniser`): until it
is, a voice session is refused (:func:`require_recogniser`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from pydantic import BaseModel

import protocol
from kernel import metrics
from kernel.db import db_call
from kernel.ratelimit import rate_limiter
from protocol.errors import DomainError, ErrorCode
from voice.answers import voice_answer
from voice.livekit import livekit_secret
from voice.services import voice_command_record
from voice.speech import recogniser as speech
from voice.speech.engines import BYTES_PER_SECOND
from voice.speech.intents import Command, parse_command
from voice.speech.pipeline import Final, Interim, Listener, Result

logger = logging.getLogger(__name__)

# Seconds a VOICE_SESSION_START waits for a recogniser still being made ready before it is
# refused: loading the cached model after startup takes about 2 s.
READY_WAIT = 5.0
QUEUE_LIMIT = 256  # queued audio chunks per session before the sender is told to slow down

# Recognition threads: enough to use every core, shared by all sessions of the process.
_executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="voice")

Deliver = Callable[[str], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class _End:
    """``VOICE_AUDIO_END`` in the audio queue."""

    request_id: str | None


async def require_recogniser() -> None:
    """Refuse a voice session while this process cannot listen yet.

    A server without a LiveKit secret says voice is unavailable (``INTERNAL_ERROR``). A
    recogniser still being made ready is waited for up to ``wait`` seconds (on a worker thread,
    never the event loop), which covers loading the cached model after startup; past that (the
    model's cache is still being built) the answer is ``RATE_LIMITED`` with ``retryAfterMs``:
    the client may ask again then.
    """
    livekit_secret()
    recogniser = speech.recogniser
    if not recogniser.ready() and READY_WAIT > 0:
        await asyncio.to_thread(recogniser.wait, READY_WAIT)
    if not recogniser.ready():
        raise DomainError(
            ErrorCode.RATE_LIMITED,
            "voice is starting up: try again shortly",
            {"retryAfterMs": recogniser.phase.retry_after_ms},
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    wallet: str
    environment_id: str | None


class AudioBudget:
    """A token bucket of audio seconds: ``rate`` seconds of audio per second, ``burst`` ahead."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = burst
        self.at = time.monotonic()

    def take(self, seconds: float) -> bool:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        if seconds > self.level:
            return False
        self.level -= seconds
        return True


def admit_audio(pcm: bytes, budget: AudioBudget, session_id: str) -> None:
    """Refuse audio that is malformed or more than the session may send."""
    if len(pcm) % 2:
        raise protocol.invalid("audio frames hold whole 16-bit samples (an even byte count)")
    if not budget.take(len(pcm) / BYTES_PER_SECOND):
        raise too_fast(session_id, "audio arrives faster than it can be listened to")


def too_fast(session_id: str, message: str) -> DomainError:
    details = {"sessionId": session_id, "retryAfterMs": 1000}
    return DomainError(ErrorCode.RATE_LIMITED, message, details)


class VoiceRunner:
    """Recognition for one session; ``deliver`` gets every outgoing frame, in order."""

    def __init__(self, session: SessionInfo, deliver: Deliver, *, source: str) -> None:
        self.session = session
        self.deliver = deliver
        self.source = source
        self.queue: asyncio.Queue[bytes | _End] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.budget = AudioBudget(
            settings.FUNPUMP_VOICE_AUDIO_RATE, settings.FUNPUMP_VOICE_AUDIO_BURST
        )
        self.listener: Listener | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start listening. The recognition stream opens with the first audio: a session whose
        audio comes through LiveKit never opens one here."""
        self.task = asyncio.create_task(self._run())

    def audio(self, pcm: bytes) -> None:
        """Take PCM16 audio; refuse what is malformed or more than the session may send."""
        admit_audio(pcm, self.budget, self.session.id)
        self.listen(pcm)

    def listen(self, pcm: bytes) -> None:
        """Queue audio already admitted: a speech worker's, which the web process checked."""
        self._enqueue(pcm)

    def end_utterance(self, request_id: str | None = None) -> None:
        """``VOICE_AUDIO_END``: the current utterance is over; its final answers ``request_id``."""
        self._enqueue(_End(request_id))

    def _enqueue(self, item: bytes | _End) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise too_fast(
                self.session.id, "audio is queued faster than it is recognised"
            ) from None

    async def close(self) -> None:
        """Stop listening; what is still queued is dropped."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        listener, self.listener = self.listener, None
        if listener is not None:
            await asyncio.get_running_loop().run_in_executor(_executor, listener.close)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self.queue.get()
            # A VOICE_AUDIO_END's requestId, until its answer (the final) is on its way.
            request_id = item.request_id if isinstance(item, _End) else None
            try:
                if self.listener is None:
                    stream = await loop.run_in_executor(_executor, speech.default_engine().open)
                    self.listener = Listener(stream)
                listener = self.listener
                started = time.perf_counter()
                if isinstance(item, _End):
                    results = await loop.run_in_executor(_executor, listener.end)
                else:
                    results = await loop.run_in_executor(_executor, listener.feed, item)
                if any(isinstance(r, Final) and not r.repeated for r in results):
                    metrics.VOICE_FINAL_SECONDS.observe(time.perf_counter() - started)
                for result in results:
                    if isinstance(result, Final):
                        answering, request_id = request_id, None
                        await self._emit(result, answering)
                    else:
                        await self._emit(result)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("voice recognition failed in session %s", self.session.id)
                error = DomainError(ErrorCode.INTERNAL_ERROR, "internal error")
                await self._send_error(error, request_id)

    async def _emit(self, result: Result, request_id: str | None = None) -> None:
        session_id = self.session.id
        if isinstance(result, Interim):
            await self._send(
                "VOICE_TRANSCRIPTION",
                protocol.VoiceTranscription(text=result.text, isFinal=False, sessionId=session_id),
            )
            return
        text = result.transcript.text
        await self._send(
            "VOICE_TRANSCRIPTION",
            protocol.VoiceTranscription(text=text, isFinal=True, sessionId=session_id),
            request_id,
        )
        if result.repeated:
            return  # the answer to VOICE_AUDIO_END only: this final's command was already given
        command = parse_command(text, heard=result.transcript.confidence)
        metrics.VOICE_COMMANDS.labels(command.intent).inc()
        metrics.VOICE_AUDIO_SECONDS.inc(result.seconds)
        if command.intent != "UNKNOWN":
            refused = await self._over_limit()
            if refused is not None:
                await self._send_error(refused)
                return
        answer = await db_call(self._record_and_answer)(text, command, result.seconds)
        await self._send(
            "VOICE_COMMAND",
            protocol.VoiceCommand(
                intent=command.intent,
                parameters=command.parameters,
                confidence=command.confidence,
                sessionId=session_id,
            ),
        )
        await self._send(
            "VOICE_RESPONSE", protocol.VoiceResponse(text=answer, sessionId=session_id)
        )
        logger.info(
            "voice command",
            extra={
                "event": "voice",
                "wallet": self.session.wallet,
                "session": session_id,
                "intent": command.intent,
                "confidence": command.confidence,
                "reason": result.reason,
            },
        )

    def _record_and_answer(self, text: str, command: Command, seconds: float) -> str:
        """One trip to the database per final: keep what was heard, compose the answer."""
        voice_command_record(
            session_id=self.session.id,
            text=text,
            command=command,
            seconds=seconds,
            source=self.source,
        )
        return voice_answer(
            wallet=self.session.wallet, environment_id=self.session.environment_id, command=command
        )

    async def _over_limit(self) -> DomainError | None:
        """Count one recognised command against the wallet's voice limits."""
        for rate in settings.FUNPUMP_VOICE_COMMAND_LIMITS:
            key = f"voice-commands-{rate.replace('/', '-')}:{self.session.wallet}"
            try:
                grant = await rate_limiter(rate).acquire(key)
            except Exception:
                logger.exception("voice limiter unavailable; letting a command through")
                continue
            if not grant.granted:
                return DomainError(
                    ErrorCode.RATE_LIMITED,
                    f"at most {rate.replace('/', ' voice commands per ')} seconds",
                    {"retryAfterMs": grant.retry_after_ms, "sessionId": self.session.id},
                )
        return None

    async def _send(
        self, message_type: str, data: BaseModel, request_id: str | None = None
    ) -> None:
        await self._deliver(protocol.encode(message_type, data, request_id))

    async def _send_error(self, error: DomainError, request_id: str | None = None) -> None:
        await self._deliver(protocol.error_frame(error, request_id))

    async def _deliver(self, frame: str) -> None:
        sent = self.deliver(frame)
        if sent is not None:
            await sent
