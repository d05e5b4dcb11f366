"""LiveKit access tokens, minted locally with livekit-api (no call to a LiveKit server).

A user's token lets exactly one identity (the wallet) join exactly one room (the session's) and
publish audio from the microphone, nothing else: no video, no data messages, no room admin. The
voice agent's token joins the same room hidden, to subscribe to that audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from livekit import api

from protocol.errors import DomainError, ErrorCode

# LiveKit's name for a microphone track source.
MICROPHONE = "microphone"


@dataclass(frozen=True, slots=True)
class RoomToken:
    jwt: str
    expires_at: datetime


def user_token(*, wallet: str, room: str, now: datetime, ttl: timedelta) -> RoomToken:
    """A token for ``wallet`` to join ``room`` and publish its microphone only."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=[MICROPHONE],
        can_subscribe=False,  # nothing to hear: the agent answers on the WebSocket
        can_publish_data=False,
        can_update_own_metadata=False,
    )
    return _mint(identity=wallet, grants=grants, now=now, ttl=ttl)


def agent_token(*, room: str, now: datetime, ttl: timedelta) -> RoomToken:
    """A token for the voice agent: joins ``room`` hidden and subscribes, publishes nothing."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=False,
        can_subscribe=True,
        can_publish_data=False,
        hidden=True,
        agent=True,
    )
    return _mint(identity=f"funpump-agent-{room}", grants=grants, now=now, ttl=ttl)


def _mint(*, identity: str, grants: api.VideoGrants, now: datetime, ttl: timedelta) -> RoomToken:
    # livekit-api stamps nbf/exp from the wall clock itself; ``now`` only reports the expiry.
    token = (
        api.AccessToken(settings.LIVEKIT_API_KEY, livekit_secret())
        .with_identity(identity)
        .with_ttl(ttl)
        .with_grants(grants)
    )
    return RoomToken(jwt=token.to_jwt(), expires_at=now + ttl)


def livekit_secret() -> str:
    """``LIVEKIT_API_SECRET`` (settings give a development one in debug mode)."""
    secret = str(settings.LIVEKIT_API_SECRET)
    if not secret:
        raise VoiceUnavailable("LIVEKIT_API_SECRET is not set")
    return secret


class VoiceUnavailable(DomainError):
    """Voice is not configured on this server: the client is told so, nothing is recorded."""

    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.INTERNAL_ERROR, "voice is not available on this server")
        self.reason = reason
