from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from trading import curve
from trading.state import Phase


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
    # Defaults in the database too: rows written by plain SQL that predates them stay valid.
    lp_fee = models.PositiveBigIntegerField(
        default=0, db_default=0, help_text="The pool's LP fee (pool phase)."
    )
    phase = models.CharField(
        max_length=8, choices=Phase.choices, default=Phase.CURVE, db_default=Phase.CURVE
    )
    round = models.PositiveIntegerField(default=1, db_default=1)
    sequence = models.PositiveBigIntegerField()
    virtual_sol_after = models.PositiveBigIntegerField(
        help_text="The pool's SOL in the pool phase."
    )
    virtual_token_after = models.PositiveBigIntegerField(
        help_text="The pool's tokens in the pool phase."
    )
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
        return self.protocol_fee + self.creator_fee + self.lp_fee

    @property
    def price(self) -> Decimal:
        """Average fill price in SOL per whole token, fees excluded."""
        return curve.average_price(self.sol_amount, self.token_amount)


PRICE_DIGITS = 60
PRICE_PLACES = 40  # a published price has 20 significant digits: exact down to 1e-20 SOL/token


def _price_field() -> models.DecimalField[Decimal, Decimal]:
    return models.DecimalField(max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES)


class MinuteCandle(models.Model):
    """One environment's trading in one minute of one round: the one-minute candle (trade
    prices, fees excluded; SOL volume in lamports, fees excluded; the number of trades).

    Written in the trade's transaction under the environment's lock, so a candle is never
    raced; the 24 h figures and longer candles read at most 1,440 rows a day instead of every
    trade. A minute without trades has no row.
    """

    environment = models.ForeignKey(
        "environments.Environment", on_delete=models.CASCADE, related_name="minute_candles"
    )
    round = models.PositiveIntegerField(default=1)
    minute = models.DateTimeField()
    sol_amount = models.PositiveBigIntegerField(default=0)
    trades = models.PositiveIntegerField(default=0)
    open = _price_field()
    high = _price_field()
    low = _price_field()
    close = _price_field()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "round", "minute"], name="one_candle_per_minute"
            )
        ]

    def __str__(self) -> str:
        return f"{self.environment_id} r{self.round} {self.minute:%Y-%m-%d %H:%M} {self.sol_amount}"


class MarketEvent(models.Model):
    """A sequenced event of a market that is not a trade or a chat line (the curve's
    graduation to its pool, a new round), kept so that it can be replayed in order."""

    class Kind(models.TextChoices):
        GRADUATED = "MARKET_GRADUATED", "graduated to its pool"
        ROUND_STARTED = "ROUND_STARTED", "round started"

    environment = models.ForeignKey(
        "environments.Environment", on_delete=models.CASCADE, related_name="market_events"
    )
    sequence = models.PositiveBigIntegerField()
    round = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, choices=Kind.choices)
    data = models.JSONField(help_text="The event's data as broadcast.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["environment", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "sequence"], name="market_event_sequence_unique"
            )
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.kind} in {self.environment_id}"
