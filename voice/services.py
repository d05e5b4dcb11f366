"""Voice sessions: start (one per wallet), end, and the record of what was recognised."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from environments.models import Environment
from kernel.realtime import signal_on_commit, voice_key
from protocol.errors import DomainError, ErrorCode
from voice.livekit import user_token
from voice.models import VoiceCommand, VoiceSession, new_session_id
from voice.speech.intents import Command


@dataclass(frozen=True, slots=True)
class StartedSession:
    """A new session and what ``VOICE_SESSION_READY`` tells the client about it."""

    id: str
    environment_id: str | None
    ready: dict[str, Any]


def voice_session_start(
    *, wallet: str, language: str, environment_id: str | None
) -> StartedSession:
    """Open a session for ``wallet`` with a LiveKit token; its open session, if any, ends.

    The wallet's other session may live on another connection or process: it is told through
    the session's signal key once this transaction commits.
    """
    try:
        return _start(wallet=wallet, language=language, environment_id=environment_id)
    except IntegrityError:
        # Another start for this wallet committed between our read and our insert; a second
        # attempt sees that session and ends it.
        return _start(wallet=wallet, language=language, environment_id=environment_id)


def _start(*, wallet: str, language: str, environment_id: str | None) -> StartedSession:
    now = timezone.now()
    ttl = timedelta(seconds=settings.FUNPUMP_VOICE_SESSION_TTL)
    session_id = new_session_id()
    room = f"funpump-{session_id}"
    token = user_token(wallet=wallet, room=room, now=now, ttl=ttl)
    with transaction.atomic():
        if (
            environment_id is not None
            and not Environment.objects.filter(pk=environment_id).exists()
        ):
            raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found")
        _end_open(wallet=wallet, reason=VoiceSession.EndReason.REPLACED, now=now)
        session = VoiceSession.objects.create(
            id=session_id,
            wallet=wallet,
            room=room,
            language=language,
            environment_id=environment_id,
            expires_at=token.expires_at,
        )
    return StartedSession(
        id=session.id,
        environment_id=environment_id,
        ready={
            "sessionId": session.id,
            "liveKitToken": token.jwt,
            "liveKitUrl": settings.LIVEKIT_URL,
            "room": room,
            "expiresAt": int(token.expires_at.timestamp() * 1000),
        },
    )


def _end_open(*, wallet: str, reason: str, now: Any) -> None:
    for old in VoiceSession.objects.select_for_update().filter(wallet=wallet, ended_at=None):
        old.ended_at = now
        old.end_reason = reason
        old.save(update_fields=["ended_at", "end_reason"])
        signal_on_commit(voice_key(old.id), {"ended": reason})


def voice_session_end(*, session_id: str, wallet: str, reason: str) -> bool:
    """End ``wallet``'s session ``session_id`` if it is still open; True when it was."""
    with transaction.atomic():
        ended = VoiceSession.objects.filter(pk=session_id, wallet=wallet, ended_at=None).update(
            ended_at=timezone.now(), end_reason=reason
        )
        if ended:
            signal_on_commit(voice_key(session_id), {"ended": reason})
    return bool(ended)


def voice_command_record(
    *, session_id: str, text: str, command: Command, seconds: float, source: str
) -> None:
    """Keep one final transcript and what it was understood as; count it on the session."""
    with transaction.atomic():
        VoiceCommand.objects.create(
            session_id=session_id,
            text=text[:500],
            intent=command.intent,
            parameters=command.parameters,
            confidence=command.confidence,
            audio_seconds=Decimal(str(round(min(seconds, 999.0), 2))),
            source=source,
        )
        recognised = 0 if command.intent == "UNKNOWN" else 1
        VoiceSession.objects.filter(pk=session_id).update(
            utterances=F("utterances") + 1, commands=F("commands") + recognised
        )
