"""The constant-product pool a graduated market trades on (PumpSwap), in integer math.

Units as in :mod:`trading.curve`: lamports and raw token units, every value a Python ``int``.

Where the numbers come from:

* Fees. PumpSwap's ``GlobalConfig`` charges ``lp_fee_basis_points = 20`` and
  ``protocol_fee_basis_points = 5`` on every ``buy``/``sell`` (pump-fun/pump-public-docs,
  ``docs/PUMP_SWAP_README.md``, "GlobalConfig"); the coin-creator fee upgrade added
  ``coin_creator_fee_basis_points``, charged on canonical pools (those pump.fun's ``migrate``
  creates) the same way (``docs/PUMP_SWAP_CREATOR_FEE_README.md``); 5 bps is the value it went
  live with. Each fee is ``fee(x, b) = ceil(x * b / 10000)`` (the SDK's ``fee`` = ``ceilDiv``).
* Migration. pump.fun's ``migrate`` moves a complete curve (``real_token_reserves == 0``) to a
  canonical PumpSwap pool; ``Global.pool_migration_fee = 15_000_001`` lamports pay for the
  accounts it creates (``docs/PUMP_PROGRAM_README.md``). The pool receives the curve's real SOL
  less that fee, and the tokens the curve still holds: the total supply less what was sold.
* Swap formulas. The PumpSwap SDK (npm ``@pump-fun/pump-swap-sdk``, ``src/sdk/buy.ts`` and
  ``src/sdk/sell.ts``; read in the GitHub mirror wsy2220/pump-swap-sdk at 1c8ae3e, and the
  fee-overflow correction of the later SDK's ``buyQuoteInputInternalWithFees``):
  ``buyQuoteInputInternal``, ``buyBaseInputInternal`` and ``sellBaseInputInternal``.
  On chain the LP fee is paid into the pool's quote vault (a buy adds ``cost + lp`` to it, a sell
  takes out ``out - lp``): the LP fee stays in the pool, so ``k`` grows; the protocol and creator
  fees go to their recipients and leave it.

State: ``S, T`` are the pool's SOL and token reserves; ``l, p, c`` its LP, protocol and creator
fees in bps, ``B = l + p + c``.

Buy with a SOL budget ``amount`` (fees included, like the curve's)::

    e      = amount * 10000 // (10000 + B)
    e     -= max(e + fee(e, l) + fee(e, p) + fee(e, c) - amount, 0)   (rounding of the fees)
    tokens = T * (e - 1) // (S + e - 1)                          (buyQuoteInputInternal)
    cost   = ceil(S * tokens / (T - tokens))                     (buyBaseInputInternal)
    paid   = cost + fee(cost, l) + fee(cost, p) + fee(cost, c)   (never more than amount)
    S += cost + fee(cost, l); T -= tokens

Sell ``amount`` raw tokens (sellBaseInputInternal)::

    out      = S * amount // (T + amount)
    received = out - fee(out, l) - fee(out, p) - fee(out, c)
    S -= out - fee(out, l); T += amount

Invariants (property tests): ``S * T`` never decreases; ``S`` and ``T`` stay positive; a buy
never pays more than its budget. A trade that would move no tokens, or pay a seller nothing,
raises :class:`trading.curve.AmountTooSmall`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from trading.curve import (
    BPS,
    DEFAULT_TOTAL_SUPPLY,
    LAMPORTS_PER_SOL,
    AmountTooSmall,
    Curve,
    Fill,
    Priced,
    fee,
)

# PumpSwap's fees on canonical pools created by pump.fun's ``migrate``, in basis points.
DEFAULT_LP_FEE_BPS = 20
DEFAULT_PROTOCOL_FEE_BPS = 5
DEFAULT_CREATOR_FEE_BPS = 5
# pump.fun's ``Global.pool_migration_fee`` (lamports), kept by the migration, not pooled.
DEFAULT_MIGRATION_FEE = 15_000_001

# Operators' trading limits by default: no single trade larger than 50 SOL, so nobody ends the
# default curve (about 85 SOL) alone in one trade.
DEFAULT_MAX_TRADE = 50 * LAMPORTS_PER_SOL


@dataclass(frozen=True, slots=True)
class Pool(Priced):
    """Reserves and fee rates of one constant-product pool."""

    sol: int
    token: int
    lp_fee_bps: int = DEFAULT_LP_FEE_BPS
    protocol_fee_bps: int = DEFAULT_PROTOCOL_FEE_BPS
    creator_fee_bps: int = DEFAULT_CREATOR_FEE_BPS

    @property
    def reserves(self) -> tuple[int, int]:
        """The SOL and token reserves that price it."""
        return self.sol, self.token

    def _fees(self, amount: int) -> tuple[int, int, int]:
        return (
            fee(amount, self.lp_fee_bps),
            fee(amount, self.protocol_fee_bps),
            fee(amount, self.creator_fee_bps),
        )

    def buy(self, amount: int) -> Fill[Pool]:
        """Spend at most ``amount`` lamports, fees included, on tokens."""
        total_bps = BPS + self.lp_fee_bps + self.protocol_fee_bps + self.creator_fee_bps
        effective = max(amount, 0) * BPS // total_bps
        effective -= max(effective + sum(self._fees(effective)) - amount, 0)
        spend = max(effective - 1, 0)
        tokens = self.token * spend // (self.sol + spend)
        if tokens <= 0:
            raise AmountTooSmall("amount too small")
        cost = -(-self.sol * tokens // (self.token - tokens))
        lp_fee, protocol_fee, creator_fee = self._fees(cost)
        return Fill(
            is_buy=True,
            sol_amount=cost,
            token_amount=tokens,
            protocol_fee=protocol_fee,
            creator_fee=creator_fee,
            lp_fee=lp_fee,
            curve=replace(self, sol=self.sol + cost + lp_fee, token=self.token - tokens),
        )

    def sell(self, amount: int) -> Fill[Pool]:
        """Sell ``amount`` raw tokens for SOL, fees taken from the proceeds."""
        if amount <= 0:
            raise AmountTooSmall("amount too small")
        out = self.sol * amount // (self.token + amount)
        lp_fee, protocol_fee, creator_fee = self._fees(out)
        if out - lp_fee - protocol_fee - creator_fee <= 0:
            raise AmountTooSmall("amount too small")
        return Fill(
            is_buy=False,
            sol_amount=out,
            token_amount=amount,
            protocol_fee=protocol_fee,
            creator_fee=creator_fee,
            lp_fee=lp_fee,
            curve=replace(self, sol=self.sol - out + lp_fee, token=self.token + amount),
        )

    def trade(self, *, amount: int, is_buy: bool) -> Fill[Pool]:
        return self.buy(amount) if is_buy else self.sell(amount)


@dataclass(frozen=True, slots=True)
class Migration:
    """What pump.fun's ``migrate`` needs to know about a curve, fixed at its creation."""

    total_supply: int = DEFAULT_TOTAL_SUPPLY
    initial_real_token: int = 0
    migration_fee: int = DEFAULT_MIGRATION_FEE
    lp_fee_bps: int = DEFAULT_LP_FEE_BPS
    protocol_fee_bps: int = DEFAULT_PROTOCOL_FEE_BPS
    creator_fee_bps: int = DEFAULT_CREATOR_FEE_BPS

    def fee_taken(self, curve: Curve) -> int:
        """The migration fee actually kept: never so much that the pool would hold no SOL."""
        return max(min(self.migration_fee, curve.real_sol - 1), 0)

    def pool(self, curve: Curve) -> Pool:
        """The pool a complete ``curve`` migrates to: its real SOL less the migration fee, and
        the tokens it still holds (the total supply less the tokens sold on it)."""
        sold = self.initial_real_token - curve.real_token
        return Pool(
            sol=curve.real_sol - self.fee_taken(curve),
            token=self.total_supply - sold,
            lp_fee_bps=self.lp_fee_bps,
            protocol_fee_bps=self.protocol_fee_bps,
            creator_fee_bps=self.creator_fee_bps,
        )
