"""What the voice agent reads of open voice sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from voice.models import VoiceSession


@dataclass(frozen=True, slots=True)
class OpenSession:
    """What the agent needs of an open voice session."""

    id: str
    wallet: str
    room: str
    environment_id: str | None
    expires_at: datetime


def open_sessions(*, now: datetime) -> list[OpenSession]:
    """Sessions neither ended nor expired at ``now``, oldest first."""
    rows = (
        VoiceSession.objects.filter(ended_at__isnull=True, expires_at__gt=now)
        .order_by("started_at")
        .values_list("id", "wallet", "room", "environment_id", "expires_at")
    )
    return [OpenSession(*row) for row in rows]
