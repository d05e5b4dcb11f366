"""The socket's voice messages: sessions, their binary audio frames, and what comes back.

:class:`VoiceHandlers` is a mixin of :class:`gateway.consumers.RoomConsumer` (its ``HANDLERS``
table points at these methods). A connection has at most one voice session; its audio is
recognised in this process (:class:`voice.session.VoiceRunner`) or, with
``FUNPUMP_SPEECH=worker``, by a speech worker (:class:`voice.worker.RemoteRunner`), whose frames
come back as signals on the session's key, as the LiveKit agent's do.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings

import protocol
from kernel.db import db_call
from kernel.realtime import Hub, voice_key
from protocol.errors import DomainError, ErrorCode
from voice.services import voice_session_end, voice_session_start
from voice.session import SessionInfo, VoiceRunner, require_recogniser
from voice.worker import RemoteRunner, require_worker


class VoiceHandlers:
    """The voice part of a connection: ``VOICE_SESSION_START``, ``VOICE_AUDIO_END``,
    ``VOICE_SESSION_END`` and binary frames."""

    voice: VoiceRunner | RemoteRunner | None = None
    voice_expires = 0.0  # when the session's token expires (epoch seconds)
    voice_refused_at = float("-inf")  # the last time a flood of audio was refused

    if TYPE_CHECKING:  # provided by the consumer
        hub: Hub
        connection_id: str
        wallet: str | None
        last_joined: str | None
        closing_voice: asyncio.Future[None]

        def push(self, frame: str) -> None: ...

        def reply(self, message_type: str, data: Any, request_id: str | None) -> None: ...

        def error(self, error: DomainError, request_id: str | None) -> None: ...

        def _require_wallet(self, user_id: str | None = None) -> str: ...

    async def on_voice_start(
        self, data: protocol.VoiceSessionStartData, request_id: str | None
    ) -> None:
        wallet = self._require_wallet(data.userId)
        worker = None
        if settings.FUNPUMP_SPEECH == "worker":
            worker = await require_worker(self.hub, self.connection_id)
        else:
            await require_recogniser()
        if self.voice is not None:
            await self._voice_stop(reason=None)  # the new session replaces it in the database
        started = await db_call(voice_session_start)(
            wallet=wallet,
            language=data.preferredLanguage,
            environment_id=data.environmentId or self.last_joined,
        )
        info = SessionInfo(started.id, wallet, started.environment_id)
        expires = started.ready["expiresAt"] / 1000  # the token's own expiry
        # Listening first: a worker's frames come back as signals on the session's key.
        await self.hub.listen(
            voice_key(started.id),
            self.connection_id,
            lambda payload: self._voice_signal(started.id, payload),
        )
        runner: VoiceRunner | RemoteRunner
        if worker is None:
            runner = VoiceRunner(info, self.push, source="socket")
        else:
            runner = RemoteRunner(info, worker, self.push, expires_at=expires)
        try:
            await runner.start()
        except BaseException:
            await self.hub.unlisten(voice_key(started.id), self.connection_id)
            raise
        self.voice = runner
        self.voice_expires = expires
        self.reply("VOICE_SESSION_READY", protocol.VoiceSessionReady(**started.ready), request_id)

    def _voice_session(self, session_id: str) -> VoiceRunner | RemoteRunner:
        self._require_wallet()
        if self.voice is None or self.voice.session.id != session_id:
            raise protocol.invalid("no such voice session on this connection", field="sessionId")
        return self.voice

    async def on_voice_audio_end(
        self, data: protocol.VoiceAudioEndData, request_id: str | None
    ) -> None:
        self._voice_session(data.sessionId).end_utterance(request_id)

    async def on_voice_session_end(
        self, data: protocol.VoiceSessionEndData, request_id: str | None
    ) -> None:
        self._voice_session(data.sessionId)
        await self._voice_stop(reason="client")

    def _voice_audio(self, pcm: bytes) -> None:
        """A binary frame: audio of the connection's voice session."""
        if self.voice is not None and time.time() >= self.voice_expires:
            self.closing_voice = asyncio.ensure_future(self._voice_stop(reason="expired"))
            self.error(protocol.invalid("the voice session expired; start a new one"), None)
            return
        if self.voice is None:
            self.error(protocol.invalid("binary frames are only accepted in a voice session"), None)
            return
        try:
            self.voice.audio(pcm)
        except DomainError as exc:
            # A flood gets one refusal a second, not one per frame.
            now = time.monotonic()
            if exc.code is not ErrorCode.RATE_LIMITED or now - self.voice_refused_at >= 1:
                self.voice_refused_at = now
                self.error(exc, None)

    def _voice_signal(self, session_id: str, payload: dict[str, Any]) -> None:
        """A signal for this connection's session: a frame from the voice agent or a speech
        worker, or its end."""
        if self.voice is None or self.voice.session.id != session_id:
            return
        frame = payload.get("frame")
        if isinstance(frame, str):
            if isinstance(self.voice, RemoteRunner):
                self.voice.heard(frame)  # the worker is alive; a final answers a waiting end
            self.push(frame)
        elif payload.get("ended"):
            self.closing_voice = asyncio.ensure_future(self._voice_stop(reason=None))

    async def _voice_stop(self, *, reason: str | None) -> None:
        """Stop this connection's session; ``reason`` also ends it in the database."""
        runner, self.voice = self.voice, None
        if runner is None:
            return
        await self.hub.unlisten(voice_key(runner.session.id), self.connection_id)
        await runner.close()
        if reason is not None and self.wallet is not None:
            await db_call(voice_session_end)(
                session_id=runner.session.id, wallet=self.wallet, reason=reason
            )
