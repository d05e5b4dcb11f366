from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from trading import curve


class Trade(models.Model):
    """One executed trade: a ledger row, never edited after it is written."""

    environment = models.ForeignKey(
        "environments.Environment", on_delete=models.CASCADE, related_name="trades"
    )
    wallet = models.CharField(max_length=44)
    is_buy = models.BooleanField()
    amount = models.PositiveBigIntegerField(help_text="The request: lamports to buy, raw to sell.")
    sol_amount = models.PositiveBigIntegerField(help_text="Lamports the curve took or paid.")
    token_amount = models.PositiveBigIntegerField()
    protocol_fee = models.PositiveBigIntegerField()
    creator_fee = models.PositiveBigIntegerField()
    sequence = models.PositiveBigIntegerField()
    virtual_sol_after = models.PositiveBigIntegerField()
    virtual_token_after = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    settled_at = models.DateTimeField(null=True, blank=True, help_text="When rewards settled it.")

    class Meta:
        ordering = ["environment", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "sequence"], name="trade_sequence_unique_per_environment"
            )
        ]
        indexes = [
            models.Index(fields=["environment", "-sequence"]),
            models.Index(fields=["wallet", "created_at"]),
            models.Index(fields=["environment", "created_at"]),
            models.Index(
                fields=["id"], condition=Q(settled_at__isnull=True), name="trade_unsettled_idx"
            ),
        ]

    def __str__(self) -> str:
        side = "buy" if self.is_buy else "sell"
        return f"#{self.sequence} {side} {self.amount} by {self.wallet}"

    @property
    def fee(self) -> int:
        return self.protocol_fee + self.creator_fee

    @property
    def price(self) -> Decimal:
        """Average fill price in SOL per whole token, fees excluded."""
        return curve.average_price(self.sol_amount, self.token_amount)


class VolumeMinute(models.Model):
    """SOL traded in one environment during one minute (fees excluded), for the 24 h volume.

    Written in the trade's transaction under the environment's lock, so a bucket is never
    raced; the 24 h volume then sums at most 1,440 rows instead of every trade of the day.
    """

    environment = models.ForeignKey(
        "environments.Environment", on_delete=models.CASCADE, related_name="volume_minutes"
    )
    minute = models.DateTimeField()
    sol_amount = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "minute"], name="one_bucket_per_minute")
        ]

    def __str__(self) -> str:
        return f"{self.environment_id} {self.minute:%Y-%m-%d %H:%M} {self.sol_amount}"
