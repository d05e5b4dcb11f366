from __future__ import annotations

import secrets

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from protocol import MAX_CHAT_CHARS
from trading.state import CurveState, Phase

ENVIRONMENT_ID_ALPHABET = "abcdefghijkmnopqrstuvwxyz23456789"


# Ids become channel-layer group names (``env.<id>``): ASCII letters, digits, ``_ - .`` only.
environment_id_validator = RegexValidator(
    r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z",
    "Use 1-64 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit.",
)


def new_environment_id() -> str:
    """An opaque id that is also a valid channel-layer group name."""
    return "env_" + "".join(secrets.choice(ENVIRONMENT_ID_ALPHABET) for _ in range(12))


class Environment(CurveState):
    """A virtual launch: one bonding curve, its participants' balances and its chat.

    The curve's constants and reserves are :class:`trading.state.CurveState`'s.

    ``sequence`` numbers the environment's broadcast events (trades and chat): it is raised by
    exactly one per event, inside the event's transaction, with this row locked.
    """

    id = models.CharField(
        primary_key=True,
        max_length=64,
        default=new_environment_id,
        validators=[environment_id_validator],
    )
    name = models.CharField(max_length=64)
    token_mint = models.CharField(max_length=44, db_index=True)
    launched_by = models.CharField(
        max_length=44, blank=True, db_index=True, help_text="Wallet that launched it, if any."
    )
    is_open = models.BooleanField(default=True, help_text="Closed environments take no trades.")
    sequence = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(CurveState.Meta):
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["token_mint", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def accepts_trades(self) -> bool:
        """Open, and trading on its curve or (once graduated) its pool."""
        return self.is_open and (self.phase == Phase.POOL or not self.complete)


class Position(models.Model):
    """A wallet's virtual balances in one environment, created when it first joins."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="positions")
    wallet = models.CharField(max_length=44)
    sol_balance = models.PositiveBigIntegerField()
    token_balance = models.PositiveBigIntegerField(default=0)
    joined_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_traded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "wallet"], name="one_position_per_wallet"
            ),
            models.CheckConstraint(
                condition=Q(sol_balance__gte=0), name="sol_balance_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(token_balance__gte=0), name="token_balance_not_negative"
            ),
        ]
        indexes = [
            models.Index(fields=["wallet"]),
            models.Index(fields=["environment", "last_traded_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.wallet} in {self.environment_id}"


class RoundPosition(models.Model):
    """A participant's balances as a round ended: kept for history when the room starts over
    (the live :class:`Position` is then reset to the starting balance)."""

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="round_positions"
    )
    round = models.PositiveIntegerField()
    wallet = models.CharField(max_length=44)
    sol_balance = models.PositiveBigIntegerField()
    token_balance = models.PositiveBigIntegerField()
    joined_at = models.DateTimeField()
    ended_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "round", "wallet"], name="one_record_per_round"
            )
        ]

    def __str__(self) -> str:
        return f"{self.wallet} in {self.environment_id} round {self.round}"


class ChatMessage(models.Model):
    """One chat line; operators may hide it, which takes it out of the history."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="messages")
    wallet = models.CharField(max_length=44)
    message = models.CharField(max_length=MAX_CHAT_CHARS)
    sequence = models.PositiveBigIntegerField()
    hidden = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["environment", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "sequence"], name="chat_sequence_unique_per_environment"
            )
        ]
        indexes = [models.Index(fields=["environment", "hidden", "-sequence"])]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.wallet}: {self.message[:40]}"
