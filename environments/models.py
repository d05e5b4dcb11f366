from __future__ import annotations

import secrets

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q

from trading import curve
from trading.curve import Curve

ENVIRONMENT_ID_ALPHABET = "abcdefghijkmnopqrstuvwxyz23456789"


# Ids become channel-layer group names (``env.<id>``): ASCII letters, digits, ``_ - .`` only.
environment_id_validator = RegexValidator(
    r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z",
    "Use 1-64 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit.",
)


def new_environment_id() -> str:
    """An opaque id that is also a valid channel-layer group name."""
    return "env_" + "".join(secrets.choice(ENVIRONMENT_ID_ALPHABET) for _ in range(12))


class Environment(models.Model):
    """A virtual launch: one bonding curve, its participants' balances and its chat.

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

    # Constants of the curve, fixed at creation.
    initial_virtual_sol = models.PositiveBigIntegerField(default=curve.DEFAULT_VIRTUAL_SOL)
    initial_virtual_token = models.PositiveBigIntegerField(default=curve.DEFAULT_VIRTUAL_TOKEN)
    initial_real_token = models.PositiveBigIntegerField(default=curve.DEFAULT_REAL_TOKEN)
    total_supply = models.PositiveBigIntegerField(default=curve.DEFAULT_TOTAL_SUPPLY)
    protocol_fee_bps = models.PositiveIntegerField(default=curve.DEFAULT_PROTOCOL_FEE_BPS)
    creator_fee_bps = models.PositiveIntegerField(default=curve.DEFAULT_CREATOR_FEE_BPS)
    starting_sol_balance = models.PositiveBigIntegerField(default=curve.DEFAULT_STARTING_SOL)

    # Live state of the curve.
    virtual_sol_reserves = models.PositiveBigIntegerField(default=curve.DEFAULT_VIRTUAL_SOL)
    virtual_token_reserves = models.PositiveBigIntegerField(default=curve.DEFAULT_VIRTUAL_TOKEN)
    real_sol_reserves = models.PositiveBigIntegerField(default=0)
    real_token_reserves = models.PositiveBigIntegerField(default=curve.DEFAULT_REAL_TOKEN)
    sequence = models.PositiveBigIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(protocol_fee_bps__lte=1000) & Q(creator_fee_bps__lte=1000),
                name="environment_fees_at_most_10_percent",
            ),
            models.CheckConstraint(
                condition=Q(initial_real_token__lt=F("initial_virtual_token")),
                name="environment_real_tokens_below_virtual",
            ),
            models.CheckConstraint(
                condition=Q(real_token_reserves__lt=F("virtual_token_reserves")),
                name="environment_reserves_consistent",
            ),
        ]
        indexes = [models.Index(fields=["token_mint", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def curve(self) -> Curve:
        return Curve(
            virtual_sol=self.virtual_sol_reserves,
            virtual_token=self.virtual_token_reserves,
            real_sol=self.real_sol_reserves,
            real_token=self.real_token_reserves,
            protocol_fee_bps=self.protocol_fee_bps,
            creator_fee_bps=self.creator_fee_bps,
        )

    @property
    def complete(self) -> bool:
        return self.real_token_reserves == 0

    @property
    def accepts_trades(self) -> bool:
        return self.is_open and not self.complete

    def apply_curve(self, state: Curve) -> None:
        self.virtual_sol_reserves = state.virtual_sol
        self.virtual_token_reserves = state.virtual_token
        self.real_sol_reserves = state.real_sol
        self.real_token_reserves = state.real_token


class Position(models.Model):
    """A wallet's virtual balances in one environment, created when it first joins."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="positions")
    wallet = models.CharField(max_length=44)
    sol_balance = models.PositiveBigIntegerField()
    token_balance = models.PositiveBigIntegerField(default=0)
    joined_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

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
        indexes = [models.Index(fields=["wallet"])]

    def __str__(self) -> str:
        return f"{self.wallet} in {self.environment_id}"


class ChatMessage(models.Model):
    """One chat line; operators may hide it, which takes it out of the history."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="messages")
    wallet = models.CharField(max_length=44)
    message = models.CharField(max_length=500)
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
