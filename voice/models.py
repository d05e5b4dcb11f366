from __future__ import annotations

import secrets

from django.db import models
from django.db.models import Q


def new_session_id() -> str:
    """An opaque session id that is also a valid LiveKit room and channel-layer name part."""
    return "vs_" + secrets.token_hex(12)


class VoiceSession(models.Model):
    """One wallet's voice session: its LiveKit room, its language, what it recognised.

    A wallet has at most one open session (``ended_at`` null), whatever its connections: the
    partial unique constraint holds that even when two starts race.
    """

    class EndReason(models.TextChoices):
        CLIENT = "client", "ended by the client"
        REPLACED = "replaced", "replaced by a newer session"
        DISCONNECTED = "disconnected", "connection closed"
        EXPIRED = "expired", "token expired"
        ADMIN = "admin", "ended by an operator"

    id = models.CharField(primary_key=True, max_length=32, default=new_session_id)
    wallet = models.CharField(max_length=44, db_index=True)
    room = models.CharField(max_length=64, unique=True)
    language = models.CharField(max_length=16, default="en-US")
    environment = models.ForeignKey(
        "environments.Environment",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="voice_sessions",
        help_text="Where figures in answers (price, quotes) come from.",
    )
    started_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(help_text="When the LiveKit token stops working.")
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)
    utterances = models.PositiveIntegerField(default=0)
    commands = models.PositiveIntegerField(
        default=0, help_text="Recognised commands (not UNKNOWN)."
    )

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["wallet"],
                condition=Q(ended_at__isnull=True),
                name="one_open_voice_session_per_wallet",
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.wallet})"

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


class VoiceCommand(models.Model):
    """One final transcript of a session and what it was understood as."""

    session = models.ForeignKey(VoiceSession, on_delete=models.CASCADE, related_name="heard")
    text = models.CharField(max_length=500, help_text="The final transcript.")
    intent = models.CharField(max_length=32, db_index=True)
    parameters = models.JSONField(default=dict, blank=True)
    confidence = models.FloatField(help_text="0..1, as sent in VOICE_COMMAND.")
    audio_seconds = models.DecimalField(max_digits=5, decimal_places=2)
    source = models.CharField(max_length=16, help_text="socket or livekit")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.intent}: {self.text[:40]}"
