"""What a trade would do, in either phase: the one computation behind both executing a trade and
quoting it (``QUOTE_TRADE`` and ``GET /api/environments/{id}/quote``), Django-free.

:func:`quote` takes a :class:`Market` (as read from its row, locked or not) and returns the
:class:`Quote`: the fill, the migration it would cause, the prices before and after, the price
impact and the first operator limit that refuses it. :func:`trading.services.trade_execute`
calls it under the environment's lock and writes what it says; a quote only reads.

Price impact, in basis points: ``|average fill price / spot price before - 1| * 10000``, fees
excluded, computed exactly from the integers and rounded up (so a limit of ``m`` bps refuses
anything above ``m``, however slightly). The spot price is the curve's ``vS / vT`` on the curve
and ``S / T`` in the pool; the average fill price ``sol_amount / token_amount``.

Limits, checked in this order after the trade's size is known (amounts in lamports): a buy by its
``amount`` (the budget, fees included), a sell by the SOL it pays out before fees:
``minTradeSol`` (below it), ``maxTradeSol`` (above it), ``maxPriceImpactBps`` (above it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

from trading.curve import BPS, Curve, CurveComplete, Fill
from trading.pool import Migration, Pool

CURVE: Literal["curve"] = "curve"
POOL: Literal["pool"] = "pool"
PhaseName = Literal["curve", "pool"]


@dataclass(frozen=True, slots=True)
class Limits:
    """An environment's limits on one trade (lamports and bps; None: no limit)."""

    min_trade: int = 0
    max_trade: int | None = None
    max_price_impact_bps: int | None = None


@dataclass(frozen=True, slots=True)
class Market:
    """A market as stored: its phase, curve, pool (once graduated), migration terms, limits."""

    phase: PhaseName
    curve: Curve
    pool: Pool | None = None
    migration: Migration = field(default_factory=Migration)
    limits: Limits = field(default_factory=Limits)

    @property
    def graduated(self) -> bool:
        return self.phase == POOL and self.pool is not None

    @property
    def trading_on(self) -> Curve | Pool:
        """The curve, or the pool once graduated."""
        return self.pool if self.phase == POOL and self.pool is not None else self.curve

    def after(self, result: Quote) -> Market:
        """This market once ``result`` (a quote on it) is executed: migrated to its pool when
        the trade completes the curve."""
        moved = result.fill.after
        if isinstance(moved, Pool):
            return replace(self, pool=moved)
        if result.pool_after is not None:
            return replace(self, phase=POOL, curve=moved, pool=result.pool_after)
        return replace(self, curve=moved)

    @property
    def spot_price(self) -> Decimal:
        """SOL per whole token where the market trades now."""
        return self.trading_on.spot_price

    @property
    def market_cap(self) -> int:
        """Lamports, at the price where the market trades now."""
        return self.trading_on.market_cap


@dataclass(frozen=True, slots=True)
class Refusal:
    """The operator limit a trade breaks, and the limit's value (as on the wire)."""

    limit: str  # minTradeSol, maxTradeSol or maxPriceImpactBps
    value: str  # lamports or bps, as text

    @property
    def message(self) -> str:
        return {
            "minTradeSol": f"the trade is below this environment's minimum of {self.value} "
            "lamports",
            "maxTradeSol": f"the trade is above this environment's maximum of {self.value} "
            "lamports",
            "maxPriceImpactBps": f"the trade would move the price more than {self.value} bps",
        }[self.limit]


@dataclass(frozen=True, slots=True)
class Quote:
    """What a trade would do now.

    ``fill`` is on the curve or the pool (``phase``); ``pool_after`` is the pool the market
    migrates to when a buy completes the curve (None otherwise); ``unspent`` what a buy's budget
    keeps (``amount - paid``; 0 for a sell).
    """

    phase: PhaseName
    amount: int
    fill: Fill[Curve] | Fill[Pool]
    pool_after: Pool | None
    migration_fee: int
    price_before: Decimal
    price_after: Decimal
    price_impact_bps: int
    refusal: Refusal | None

    @property
    def unspent(self) -> int:
        return self.amount + self.fill.sol_delta if self.fill.is_buy else 0

    @property
    def graduates(self) -> bool:
        return self.pool_after is not None

    @property
    def size(self) -> int:
        """Lamports the limits measure: a buy's budget, a sell's SOL before fees."""
        return self.amount if self.fill.is_buy else self.fill.sol_amount


def price_impact_bps(*, sol_amount: int, token_amount: int, sol: int, token: int) -> int:
    """``ceil(|(sol_amount / token_amount) / (sol / token) - 1| * 10000)``, exactly."""
    numerator = abs(sol_amount * token - token_amount * sol) * BPS
    return -(-numerator // (token_amount * sol))


def quote(market: Market, *, amount: int, is_buy: bool) -> Quote:
    """What buying with ``amount`` lamports (fees included), or selling ``amount`` raw tokens,
    would do on ``market`` now.

    Raises :class:`trading.curve.AmountTooSmall` when the trade would move nothing, and
    :class:`trading.curve.CurveComplete` for a complete curve not yet migrated (stored before
    graduation existed). A limit's refusal is returned, not raised: the executor raises it, a
    quote reports it.
    """
    fill: Fill[Curve] | Fill[Pool]
    pool_after = None
    migration_fee = 0
    sol, token = market.trading_on.reserves
    price_before = market.trading_on.spot_price
    if isinstance(market.trading_on, Pool):
        pool_fill = market.trading_on.trade(amount=amount, is_buy=is_buy)
        fill = pool_fill
        price_after = pool_fill.curve.spot_price
    else:
        if market.curve.complete:
            raise CurveComplete("the curve is complete")
        curve_fill = market.curve.trade(amount=amount, is_buy=is_buy)
        fill = curve_fill
        if curve_fill.curve.complete:
            pool_after = market.migration.pool(curve_fill.curve)
            migration_fee = market.migration.fee_taken(curve_fill.curve)
            price_after = pool_after.spot_price
        else:
            price_after = curve_fill.curve.spot_price
    impact = price_impact_bps(
        sol_amount=fill.sol_amount, token_amount=fill.token_amount, sol=sol, token=token
    )
    result = Quote(
        phase=POOL if market.graduated else CURVE,
        amount=amount,
        fill=fill,
        pool_after=pool_after,
        migration_fee=migration_fee,
        price_before=price_before,
        price_after=price_after,
        price_impact_bps=impact,
        refusal=None,
    )
    return replace(result, refusal=_refusal(market.limits, size=result.size, impact=impact))


def _refusal(limits: Limits, *, size: int, impact: int) -> Refusal | None:
    if size < limits.min_trade:
        return Refusal("minTradeSol", str(limits.min_trade))
    if limits.max_trade is not None and size > limits.max_trade:
        return Refusal("maxTradeSol", str(limits.max_trade))
    if limits.max_price_impact_bps is not None and impact > limits.max_price_impact_bps:
        return Refusal("maxPriceImpactBps", str(limits.max_price_impact_bps))
    return None
