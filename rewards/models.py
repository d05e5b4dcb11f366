from __future__ import annotations

from django.db import models
from django.db.models import Q


class RewardTier(models.Model):
    """A reward level: reached with at least ``min_launches`` launches and ``min_volume``."""

    name = models.CharField(max_length=32, unique=True)
    min_launches = models.PositiveIntegerField(default=0)
    min_volume = models.PositiveBigIntegerField(default=0, help_text="Lamports traded.")
    rate_bps = models.PositiveIntegerField(help_text="Share of the protocol fee paid back.")

    class Meta:
        ordering = ["min_launches", "min_volume"]
        constraints = [
            models.CheckConstraint(condition=Q(rate_bps__lte=10_000), name="tier_rate_at_most_all")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.rate_bps} bps)"


class RewardAccount(models.Model):
    """A wallet's rewards: ``unclaimed + claimed`` always equals the sum of its entries."""

    wallet = models.CharField(max_length=44, unique=True)
    unclaimed = models.PositiveBigIntegerField(default=0)
    claimed = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.wallet


class Settlement(models.Model):
    """One run of ``settle_rewards``."""

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    run_by = models.CharField(max_length=150)
    trades_settled = models.PositiveIntegerField(default=0)
    total_paid = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"settlement {self.pk} ({self.trades_settled} trades)"


class RewardEntry(models.Model):
    """The ledger: one trade earned one wallet this much, for this reason."""

    class Kind(models.TextChoices):
        CREATOR_FEE = "creator_fee", "creator fee to the launcher"
        TRADER_REBATE = "trader_rebate", "protocol fee paid back to the trader"

    settlement = models.ForeignKey(Settlement, on_delete=models.PROTECT, related_name="entries")
    trade = models.ForeignKey("trading.Trade", on_delete=models.PROTECT, related_name="rewards")
    wallet = models.CharField(max_length=44, db_index=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.PositiveBigIntegerField()
    tier = models.CharField(max_length=32, blank=True)
    rate_bps = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["trade", "kind"], name="one_entry_per_trade_and_kind")
        ]

    def __str__(self) -> str:
        return f"{self.amount} to {self.wallet} ({self.kind})"


class Claim(models.Model):
    """A payout record: the unclaimed rewards a wallet claimed, to be paid by staff."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PAID = "paid"

    wallet = models.CharField(max_length=44, db_index=True)
    amount = models.PositiveBigIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="claim_not_empty")]

    def __str__(self) -> str:
        return f"{self.amount} to {self.wallet} ({self.status})"
