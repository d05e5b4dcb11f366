"""The pump.fun bonding curve in integer math.

Units: SOL amounts are lamports (10^9 per SOL), token amounts are raw units (10^6 per whole
token). Every value is a Python ``int``; no float ever touches a reserve or a balance.

State: ``vS, vT`` are the virtual SOL and token reserves, ``rS, rT`` the real ones. ``p`` and
``c`` are the protocol and creator fees in basis points, ``fee(x, b) = ceil(x * b / 10000)``.

Buy with a SOL budget ``amount`` (fees included)::

    net    = (amount - 1) * 10000 // (10000 + p + c)
    tokens = min(net * vT // (vS + net), rT)
    cost   = tokens * vS // (vT - tokens) + 1
    paid   = cost + fee(cost, p) + fee(cost, c)          (never more than amount)
    vS += cost; rS += cost; vT -= tokens; rT -= tokens

Sell ``amount`` raw tokens::

    out      = amount * vS // (vT + amount)
    received = out - fee(out, p) - fee(out, c)
    vS -= out; rS -= out; vT += amount; rT += amount

Invariants (checked by property tests): ``vS * vT`` never falls below its starting value;
``vS - rS`` and ``vT - rT`` stay constant; fees never enter the reserves; the curve is complete
when ``rT`` reaches 0. A trade that would move zero tokens, or pay a seller nothing, raises
:class:`AmountTooSmall`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Context, Decimal
from typing import Generic, TypeVar

BPS = 10_000
SOL_DECIMALS = 9
TOKEN_DECIMALS = 6
LAMPORTS_PER_SOL = 10**SOL_DECIMALS
RAW_PER_TOKEN = 10**TOKEN_DECIMALS
U64_MAX = 2**64 - 1  # the largest amount an account holds on chain, and on the wire

DEFAULT_VIRTUAL_SOL = 30_000_000_000
DEFAULT_VIRTUAL_TOKEN = 1_073_000_000_000_000
DEFAULT_REAL_TOKEN = 793_100_000_000_000
DEFAULT_TOTAL_SUPPLY = 10**15
DEFAULT_PROTOCOL_FEE_BPS = 95
DEFAULT_CREATOR_FEE_BPS = 30
DEFAULT_STARTING_SOL = 100 * LAMPORTS_PER_SOL

# Prices are published with 20 significant digits (the contract asks for at least 10).
_PRICE_CONTEXT = Context(prec=20)


class CurveError(ValueError):
    """A trade the curve cannot perform."""


class AmountTooSmall(CurveError):
    """The trade would move no tokens, or pay the seller nothing."""


class CurveComplete(CurveError):
    """Every real token has been sold; the curve takes no more trades."""


def spot_price(sol: int, token: int) -> Decimal:
    """SOL per whole token of reserves of ``sol`` lamports and ``token`` raw units."""
    return _PRICE_CONTEXT.divide(Decimal(sol), Decimal(token) * 1000)


def market_cap(sol: int, token: int) -> int:
    """Lamports the whole default supply is worth at that price: ``sol * 10^15 // token``."""
    return sol * DEFAULT_TOTAL_SUPPLY // token


def fee(amount: int, bps: int) -> int:
    """Fee of ``bps`` basis points on ``amount``, rounded up."""
    return -(-amount * bps // BPS)


class Priced:
    """A market priced by its :attr:`reserves` (SOL lamports, raw tokens): curve and pool."""

    __slots__ = ()

    @property
    def reserves(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def spot_price(self) -> Decimal:
        """SOL per whole token: ``(S / 10^9) / (T / 10^6)`` of the reserves."""
        return spot_price(*self.reserves)

    @property
    def market_cap(self) -> int:
        """Lamports: ``S * 10^15 // T`` (the price of the whole supply)."""
        return market_cap(*self.reserves)


@dataclass(frozen=True, slots=True)
class Curve(Priced):
    """Reserves and fee rates of one bonding curve."""

    virtual_sol: int = DEFAULT_VIRTUAL_SOL
    virtual_token: int = DEFAULT_VIRTUAL_TOKEN
    real_sol: int = 0
    real_token: int = DEFAULT_REAL_TOKEN
    protocol_fee_bps: int = DEFAULT_PROTOCOL_FEE_BPS
    creator_fee_bps: int = DEFAULT_CREATOR_FEE_BPS

    @property
    def complete(self) -> bool:
        return self.real_token == 0

    @property
    def reserves(self) -> tuple[int, int]:
        """The SOL and token reserves that price it: the virtual ones."""
        return self.virtual_sol, self.virtual_token

    def buy(self, amount: int) -> Fill[Curve]:
        """Spend at most ``amount`` lamports, fees included, on tokens."""
        if self.complete:
            raise CurveComplete("the curve is complete")
        total_bps = BPS + self.protocol_fee_bps + self.creator_fee_bps
        net = max(amount - 1, 0) * BPS // total_bps
        tokens = min(net * self.virtual_token // (self.virtual_sol + net), self.real_token)
        if tokens <= 0:
            raise AmountTooSmall("amount too small")
        cost = tokens * self.virtual_sol // (self.virtual_token - tokens) + 1
        protocol_fee = fee(cost, self.protocol_fee_bps)
        creator_fee = fee(cost, self.creator_fee_bps)
        after = replace(
            self,
            virtual_sol=self.virtual_sol + cost,
            virtual_token=self.virtual_token - tokens,
            real_sol=self.real_sol + cost,
            real_token=self.real_token - tokens,
        )
        return Fill(
            is_buy=True,
            sol_amount=cost,
            token_amount=tokens,
            protocol_fee=protocol_fee,
            creator_fee=creator_fee,
            curve=after,
        )

    def sell(self, amount: int) -> Fill[Curve]:
        """Sell ``amount`` raw tokens for SOL, fees taken from the proceeds."""
        if self.complete:
            raise CurveComplete("the curve is complete")
        if amount <= 0:
            raise AmountTooSmall("amount too small")
        out = amount * self.virtual_sol // (self.virtual_token + amount)
        protocol_fee = fee(out, self.protocol_fee_bps)
        creator_fee = fee(out, self.creator_fee_bps)
        if out - protocol_fee - creator_fee <= 0:
            raise AmountTooSmall("amount too small")
        after = replace(
            self,
            virtual_sol=self.virtual_sol - out,
            virtual_token=self.virtual_token + amount,
            real_sol=self.real_sol - out,
            real_token=self.real_token + amount,
        )
        return Fill(
            is_buy=False,
            sol_amount=out,
            token_amount=amount,
            protocol_fee=protocol_fee,
            creator_fee=creator_fee,
            curve=after,
        )

    def trade(self, *, amount: int, is_buy: bool) -> Fill[Curve]:
        return self.buy(amount) if is_buy else self.sell(amount)


M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Fill(Generic[M]):
    """The result of one trade: what moved, the fees, and the market after it.

    The same shape for both phases: ``curve`` is the :class:`Curve` after a curve trade, or
    the :class:`trading.pool.Pool` after a pool trade (``lp_fee`` is the pool's LP fee, which
    stays in the pool; 0 on the curve). ``sol_amount`` excludes every fee.
    """

    is_buy: bool
    sol_amount: int
    token_amount: int
    protocol_fee: int
    creator_fee: int
    curve: M
    lp_fee: int = 0

    @property
    def fee(self) -> int:
        """Every fee the trader pays: protocol, creator and (in a pool) LP."""
        return self.protocol_fee + self.creator_fee + self.lp_fee

    @property
    def after(self) -> M:
        """The market after the trade (the curve's or the pool's reserves)."""
        return self.curve

    @property
    def sol_delta(self) -> int:
        """Change of the trader's SOL balance: minus what a buyer pays, plus what a seller gets."""
        if self.is_buy:
            return -(self.sol_amount + self.fee)
        return self.sol_amount - self.fee

    @property
    def token_delta(self) -> int:
        return self.token_amount if self.is_buy else -self.token_amount

    @property
    def min_amount_out(self) -> int:
        """What the slippage guard compares: tokens for a buy, lamports after fees for a sell."""
        return self.token_amount if self.is_buy else self.sol_delta

    @property
    def price(self) -> Decimal:
        return average_price(self.sol_amount, self.token_amount)


def average_price(sol_amount: int, token_amount: int) -> Decimal:
    """SOL per whole token paid for ``token_amount`` raw units, fees excluded."""
    return _PRICE_CONTEXT.divide(Decimal(sol_amount), Decimal(token_amount) * 1000)


def format_price(price: Decimal) -> str:
    """A price as a plain decimal string, never in exponent form."""
    return format(price, "f")
