"""A bonding curve as stored: the one place that names its constants and reserves.

:class:`CurveState` is the abstract model a curve-carrying row inherits (``Environment`` today)
and :class:`CurveConstants` what an operator chooses when creating one. Services, admin and
commands read field names from here (:data:`CONSTANT_FIELDS`, :data:`RESERVE_FIELDS`,
:meth:`CurveConstants.fields`) instead of listing them, so the curve's columns can change in
one module. The math itself stays in the Django-free :mod:`trading.curve`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models import F, Q

from protocol.errors import DomainError, ErrorCode
from trading import curve, pool, quotes
from trading.curve import Curve

MAX_FEE_BPS = 1000
BPS = curve.BPS


class Phase(models.TextChoices):
    """Where a market trades: its bonding curve, then (once complete) its AMM pool."""

    CURVE = "curve", "bonding curve"
    POOL = "pool", "AMM pool"


# CurveConstants attribute → the CurveState field that stores it.
CONSTANT_FIELDS = {
    "virtual_sol": "initial_virtual_sol",
    "virtual_token": "initial_virtual_token",
    "real_token": "initial_real_token",
    "total_supply": "total_supply",
    "protocol_fee_bps": "protocol_fee_bps",
    "creator_fee_bps": "creator_fee_bps",
    "starting_sol_balance": "starting_sol_balance",
    "pool_lp_fee_bps": "pool_lp_fee_bps",
    "pool_protocol_fee_bps": "pool_protocol_fee_bps",
    "pool_creator_fee_bps": "pool_creator_fee_bps",
    "migration_fee": "migration_fee",
    "min_trade_lamports": "min_trade_lamports",
    "max_trade_lamports": "max_trade_lamports",
    "max_price_impact_bps": "max_price_impact_bps",
}

# The live reserves a trade rewrites (``save(update_fields=...)``), in Curve's order.
# Each stored reserve and the Curve attribute it holds.
RESERVES = {
    "virtual_sol_reserves": "virtual_sol",
    "virtual_token_reserves": "virtual_token",
    "real_sol_reserves": "real_sol",
    "real_token_reserves": "real_token",
}
RESERVE_FIELDS = tuple(RESERVES)


# The columns a trade reads under its lock besides the reserves, and the keyword of
# :func:`market_from_columns` each one feeds: the phase and pool, the fees, the migration's
# terms and the limits.
MARKET_COLUMNS = (
    "phase",
    "pool_sol_reserves",
    "pool_token_reserves",
    "protocol_fee_bps",
    "creator_fee_bps",
    "pool_lp_fee_bps",
    "pool_protocol_fee_bps",
    "pool_creator_fee_bps",
    "total_supply",
    "initial_real_token",
    "migration_fee",
    "min_trade_lamports",
    "max_trade_lamports",
    "max_price_impact_bps",
)


def market_from_columns(values: Mapping[str, Any]) -> quotes.Market:
    """A :class:`trading.quotes.Market` from a row's values keyed by field name (the reserves of
    :data:`RESERVE_FIELDS` and :data:`MARKET_COLUMNS`)."""
    graduated = values["phase"] == Phase.POOL
    return quotes.Market(
        phase=quotes.POOL if graduated else quotes.CURVE,
        curve=Curve(
            **{attribute: values[field] for field, attribute in RESERVES.items()},
            protocol_fee_bps=values["protocol_fee_bps"],
            creator_fee_bps=values["creator_fee_bps"],
        ),
        pool=pool.Pool(
            sol=values["pool_sol_reserves"],
            token=values["pool_token_reserves"],
            lp_fee_bps=values["pool_lp_fee_bps"],
            protocol_fee_bps=values["pool_protocol_fee_bps"],
            creator_fee_bps=values["pool_creator_fee_bps"],
        )
        if graduated
        else None,
        migration=pool.Migration(
            total_supply=values["total_supply"],
            initial_real_token=values["initial_real_token"],
            migration_fee=values["migration_fee"],
            lp_fee_bps=values["pool_lp_fee_bps"],
            protocol_fee_bps=values["pool_protocol_fee_bps"],
            creator_fee_bps=values["pool_creator_fee_bps"],
        ),
        limits=quotes.Limits(
            min_trade=values["min_trade_lamports"],
            max_trade=values["max_trade_lamports"],
            max_price_impact_bps=values["max_price_impact_bps"],
        ),
    )


def reserve_values(state: Curve) -> list[int]:
    """``state``'s reserves in the order of :data:`RESERVE_FIELDS` (for plain SQL writes)."""
    return [getattr(state, attribute) for attribute in RESERVES.values()]


@dataclass(frozen=True, slots=True)
class CurveConstants:
    """What an operator may choose when creating a curve; pump.fun's by default."""

    virtual_sol: int = curve.DEFAULT_VIRTUAL_SOL
    virtual_token: int = curve.DEFAULT_VIRTUAL_TOKEN
    real_token: int = curve.DEFAULT_REAL_TOKEN
    total_supply: int = curve.DEFAULT_TOTAL_SUPPLY
    protocol_fee_bps: int = curve.DEFAULT_PROTOCOL_FEE_BPS
    creator_fee_bps: int = curve.DEFAULT_CREATOR_FEE_BPS
    starting_sol_balance: int = curve.DEFAULT_STARTING_SOL
    pool_lp_fee_bps: int = pool.DEFAULT_LP_FEE_BPS
    pool_protocol_fee_bps: int = pool.DEFAULT_PROTOCOL_FEE_BPS
    pool_creator_fee_bps: int = pool.DEFAULT_CREATOR_FEE_BPS
    migration_fee: int = pool.DEFAULT_MIGRATION_FEE
    min_trade_lamports: int = 0
    max_trade_lamports: int | None = pool.DEFAULT_MAX_TRADE
    max_price_impact_bps: int | None = None

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> CurveConstants:
        """Read the constants from a mapping keyed by :class:`CurveState`'s field names."""
        return cls(**{name: data[field] for name, field in CONSTANT_FIELDS.items()})

    def fields(self) -> dict[str, int | None]:
        """:class:`CurveState`'s field values for a new curve: these constants, and reserves
        at their start (nothing real sold yet)."""
        return {field: getattr(self, name) for name, field in CONSTANT_FIELDS.items()} | {
            "virtual_sol_reserves": self.virtual_sol,
            "virtual_token_reserves": self.virtual_token,
            "real_sol_reserves": 0,
            "real_token_reserves": self.real_token,
            "market_cap": Curve(
                virtual_sol=self.virtual_sol, virtual_token=self.virtual_token
            ).market_cap,
        }

    def validate(self) -> None:
        """Refuse, with every problem at once, constants no curve could trade on."""
        problems = []
        if self.virtual_sol <= 0 or self.virtual_token <= 0:
            problems.append("virtual reserves must be positive")
        if not 0 < self.real_token < self.virtual_token:
            problems.append("real tokens must be positive and below the virtual tokens")
        if self.real_token > self.total_supply:
            problems.append("real tokens cannot exceed the total supply")
        for name in (
            "protocol_fee_bps",
            "creator_fee_bps",
            "pool_lp_fee_bps",
            "pool_protocol_fee_bps",
            "pool_creator_fee_bps",
        ):
            if not 0 <= getattr(self, name) <= MAX_FEE_BPS:
                problems.append(f"{name} must be between 0 and {MAX_FEE_BPS}")
        if self.starting_sol_balance < 0:
            problems.append("the starting balance cannot be negative")
        if self.migration_fee < 0:
            problems.append("the migration fee cannot be negative")
        if self.min_trade_lamports < 0:
            problems.append("the minimum trade cannot be negative")
        if self.max_trade_lamports is not None and self.max_trade_lamports < max(
            self.min_trade_lamports, 1
        ):
            problems.append("the maximum trade must be positive and at least the minimum")
        if self.max_price_impact_bps is not None and not 0 < self.max_price_impact_bps <= BPS:
            problems.append(f"the maximum price impact must be between 1 and {BPS} bps")
        if any(value > 2**63 - 1 for value in (self.virtual_sol, self.virtual_token)):
            problems.append("reserves must fit in 63 bits")
        if problems:
            raise DomainError(ErrorCode.INVALID_MESSAGE, "; ".join(problems))


class CurveState(models.Model):
    """A bonding curve's constants, fixed at creation, and its live reserves.

    Writers lock the row first (the inheriting app's lock helper), trade on :attr:`curve` and
    store the result with :meth:`apply_curve` and ``save(update_fields=RESERVE_FIELDS)``.
    """

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

    # The pool a completed curve migrates to (PumpSwap), and its fees, fixed at creation.
    phase = models.CharField(max_length=8, choices=Phase.choices, default=Phase.CURVE)
    pool_sol_reserves = models.PositiveBigIntegerField(default=0)
    pool_token_reserves = models.PositiveBigIntegerField(default=0)
    pool_lp_fee_bps = models.PositiveIntegerField(default=pool.DEFAULT_LP_FEE_BPS)
    pool_protocol_fee_bps = models.PositiveIntegerField(default=pool.DEFAULT_PROTOCOL_FEE_BPS)
    pool_creator_fee_bps = models.PositiveIntegerField(default=pool.DEFAULT_CREATOR_FEE_BPS)
    migration_fee = models.PositiveBigIntegerField(
        default=pool.DEFAULT_MIGRATION_FEE, help_text="Lamports the migration keeps (pump.fun's)."
    )
    graduated_at = models.DateTimeField(null=True, blank=True)

    # Operators' trading limits: trade size in lamports (a sell by its SOL value), price impact.
    min_trade_lamports = models.PositiveBigIntegerField(default=0, help_text="0: no minimum.")
    max_trade_lamports = models.PositiveBigIntegerField(
        null=True, blank=True, default=pool.DEFAULT_MAX_TRADE, help_text="Empty: no maximum."
    )
    max_price_impact_bps = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: no limit."
    )

    # Kept by every trade for the lobby's sorting; the round restarts the market.
    market_cap = models.PositiveBigIntegerField(
        default=Curve().market_cap, help_text="Lamports, as of the last trade."
    )
    last_trade_at = models.DateTimeField(null=True, blank=True)
    round = models.PositiveIntegerField(default=1)
    round_started_at = models.DateTimeField(null=True, blank=True)
    new_round_after = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds: start a new round once the market has graduated and been quiet this "
        "long. Empty: only operators start rounds.",
    )

    class Meta:
        abstract = True
        # ``%(class)s`` keeps the names the constraints had on Environment ("environment_...").
        constraints = [
            models.CheckConstraint(
                condition=Q(protocol_fee_bps__lte=MAX_FEE_BPS)
                & Q(creator_fee_bps__lte=MAX_FEE_BPS)
                & Q(pool_lp_fee_bps__lte=MAX_FEE_BPS)
                & Q(pool_protocol_fee_bps__lte=MAX_FEE_BPS)
                & Q(pool_creator_fee_bps__lte=MAX_FEE_BPS),
                name="%(class)s_fees_at_most_10_percent",
            ),
            models.CheckConstraint(
                condition=Q(initial_real_token__lt=F("initial_virtual_token")),
                name="%(class)s_real_tokens_below_virtual",
            ),
            models.CheckConstraint(
                condition=Q(real_token_reserves__lt=F("virtual_token_reserves")),
                name="%(class)s_reserves_consistent",
            ),
        ]

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
    def constants(self) -> CurveConstants:
        """The constants this market was created with (limits and starting balance as now)."""
        return CurveConstants.from_fields(
            {field: getattr(self, field) for field in CONSTANT_FIELDS.values()}
        )

    @property
    def market(self) -> quotes.Market:
        """The market in its phase (curve, or pool once graduated), with its limits: what
        :func:`trading.quotes.quote` trades on; ``market.spot_price`` and ``market.market_cap``
        are the price where it trades now."""
        return market_from_columns(
            {name: getattr(self, name) for name in (*RESERVE_FIELDS, *MARKET_COLUMNS)}
        )

    @property
    def complete(self) -> bool:
        """Every real token is sold: the curve takes no more trades."""
        return self.real_token_reserves == 0

    def apply_curve(self, state: Curve) -> None:
        """Take a trade's resulting reserves; the caller saves ``RESERVE_FIELDS``."""
        for field, attribute in RESERVES.items():
            setattr(self, field, getattr(state, attribute))
