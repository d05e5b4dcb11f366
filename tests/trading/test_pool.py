"""Tests for the PumpSwap pool math in :mod:`trading.pool` (no Django, no database).

The vectors are checked against a reference written here with exact fractions (the formulas of
the module docstring, PumpSwap's SDK), and against literal numbers worked out once from it.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.curve import DEFAULT_REAL_TOKEN, DEFAULT_TOTAL_SUPPLY, AmountTooSmall, Curve
from trading.pool import DEFAULT_MIGRATION_FEE, Migration, Pool

SOL = 10**9
# The pool the default curve migrates to: the curve's 85.005359057 SOL less pump.fun's
# migration fee, and the 206.9 M tokens the curve never sold.
GRADUATED_SOL = 85_005_359_057 - DEFAULT_MIGRATION_FEE
GRADUATED_TOKEN = DEFAULT_TOTAL_SUPPLY - DEFAULT_REAL_TOKEN
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def ref_fee(amount: int, bps: int) -> int:
    return math.ceil(Fraction(amount * bps, 10_000))


def ref_buy(sol: int, token: int, amount: int, fees: tuple[int, int, int]) -> tuple[int, ...]:
    """(tokens, cost, lp, protocol, creator, pool SOL after, pool tokens after)."""
    effective = math.floor(Fraction(amount * 10_000, 10_000 + sum(fees)))
    over = effective + sum(ref_fee(effective, b) for b in fees) - amount
    effective -= max(over, 0)
    spend = effective - 1
    tokens = math.floor(Fraction(token * spend, sol + spend))
    cost = math.ceil(Fraction(sol * tokens, token - tokens))
    lp, protocol, creator = (ref_fee(cost, b) for b in fees)
    return tokens, cost, lp, protocol, creator, sol + cost + lp, token - tokens


def ref_sell(sol: int, token: int, amount: int, fees: tuple[int, int, int]) -> tuple[int, ...]:
    """(out, lp, protocol, creator, received, pool SOL after, pool tokens after)."""
    out = math.floor(Fraction(sol * amount, token + amount))
    lp, protocol, creator = (ref_fee(out, b) for b in fees)
    return out, lp, protocol, creator, out - lp - protocol - creator, sol - out + lp, token + amount


def graduated() -> Pool:
    return Pool(sol=GRADUATED_SOL, token=GRADUATED_TOKEN)


# --- migration --------------------------------------------------------------------------------


def test_default_curve_migrates_like_pump_fun() -> None:
    done = Curve().buy(100 * SOL).curve
    assert done.complete
    assert done.real_sol == 85_005_359_057
    migration = Migration(initial_real_token=DEFAULT_REAL_TOKEN)
    assert migration.fee_taken(done) == 15_000_001
    pool = migration.pool(done)
    assert (pool.sol, pool.token) == (84_990_359_056, 206_900_000_000_000)
    assert (pool.lp_fee_bps, pool.protocol_fee_bps, pool.creator_fee_bps) == (20, 5, 5)
    # The pool's price continues the curve's final one (within the migration fee's share).
    assert abs(pool.spot_price / Curve(**_reserves(done)).spot_price - 1) < 0.001


def _reserves(curve: Curve) -> dict[str, int]:
    return {"virtual_sol": curve.virtual_sol, "virtual_token": curve.virtual_token}


def test_migration_fee_never_empties_the_pool() -> None:
    tiny = Curve(real_sol=10_000, real_token=0, virtual_sol=30 * SOL + 10_000)
    pool = Migration(initial_real_token=DEFAULT_REAL_TOKEN).pool(tiny)
    assert pool.sol == 1
    assert pool.token == GRADUATED_TOKEN


# --- reference vectors ------------------------------------------------------------------------


def test_buy_one_sol_on_the_graduated_pool() -> None:
    fill = graduated().buy(SOL)
    assert fill.token_amount == 2_398_970_463_139
    assert fill.sol_amount == 997_008_971
    assert (fill.lp_fee, fill.protocol_fee, fill.creator_fee) == (1_994_018, 498_505, 498_505)
    assert fill.fee == 1_994_018 + 498_505 + 498_505
    assert fill.sol_delta == -999_999_999  # 1 lamport of the budget is not spent
    assert fill.token_delta == 2_398_970_463_139
    # The LP fee stays in the pool; protocol and creator fees leave it.
    assert (fill.curve.sol, fill.curve.token) == (
        GRADUATED_SOL + 997_008_971 + 1_994_018,
        GRADUATED_TOKEN - 2_398_970_463_139,
    )
    assert (fill.token_amount, fill.sol_amount, fill.lp_fee, fill.protocol_fee) == ref_buy(
        GRADUATED_SOL, GRADUATED_TOKEN, SOL, (20, 5, 5)
    )[:4]


def test_sell_a_million_tokens_on_the_graduated_pool() -> None:
    fill = graduated().sell(10**12)
    assert fill.sol_amount == 408_804_035
    assert (fill.lp_fee, fill.protocol_fee, fill.creator_fee) == (817_609, 204_403, 204_403)
    assert fill.sol_delta == 407_577_620
    assert fill.token_delta == -(10**12)
    assert (fill.curve.sol, fill.curve.token) == (
        GRADUATED_SOL - 408_804_035 + 817_609,
        GRADUATED_TOKEN + 10**12,
    )


@pytest.mark.parametrize("fees", [(20, 5, 5), (0, 0, 0), (30, 95, 30), (1000, 1000, 1000)])
@pytest.mark.parametrize("amount", [3, 1_000, 123_456_789, 7 * SOL, 50 * SOL])
def test_buy_matches_the_reference(fees: tuple[int, int, int], amount: int) -> None:
    pool = Pool(GRADUATED_SOL, GRADUATED_TOKEN, *fees)
    expected = ref_buy(GRADUATED_SOL, GRADUATED_TOKEN, amount, fees)
    if expected[0] <= 0:
        with pytest.raises(AmountTooSmall):
            pool.buy(amount)
        return
    fill = pool.buy(amount)
    got = (fill.token_amount, fill.sol_amount, fill.lp_fee, fill.protocol_fee, fill.creator_fee)
    assert (*got, fill.curve.sol, fill.curve.token) == expected


@pytest.mark.parametrize("fees", [(20, 5, 5), (0, 0, 0), (1000, 1000, 1000)])
@pytest.mark.parametrize("amount", [10**6, 10**9, 10**13, 10**15])
def test_sell_matches_the_reference(fees: tuple[int, int, int], amount: int) -> None:
    fill = Pool(GRADUATED_SOL, GRADUATED_TOKEN, *fees).sell(amount)
    expected = ref_sell(GRADUATED_SOL, GRADUATED_TOKEN, amount, fees)
    got = (fill.sol_amount, fill.lp_fee, fill.protocol_fee, fill.creator_fee, fill.sol_delta)
    assert (*got, fill.curve.sol, fill.curve.token) == expected


@pytest.mark.parametrize("amount", [0, 1, 2, -SOL])
def test_too_small_buys_are_refused(amount: int) -> None:
    with pytest.raises(AmountTooSmall):
        graduated().buy(amount)


@pytest.mark.parametrize("amount", [0, -1, 1, 2_000])
def test_too_small_sells_are_refused(amount: int) -> None:
    # A raw unit is worth about 0.00041 lamports here: 2,000 of them are worth nothing.
    with pytest.raises(AmountTooSmall):
        graduated().sell(amount)


def test_a_sell_worth_41_lamports_pays_its_fees_rounded_up() -> None:
    fill = graduated().sell(10**5)
    assert fill.sol_amount == 41
    assert (fill.lp_fee, fill.protocol_fee, fill.creator_fee) == (1, 1, 1)
    assert fill.sol_delta == 38


# --- properties -------------------------------------------------------------------------------

pools = st.builds(
    Pool,
    sol=st.integers(1, 10**13),
    token=st.integers(1, 10**16),
    lp_fee_bps=st.integers(0, 1000),
    protocol_fee_bps=st.integers(0, 1000),
    creator_fee_bps=st.integers(0, 1000),
)


@PROPERTY_SETTINGS
@given(pool=pools, amounts=st.lists(st.tuples(st.booleans(), st.integers(0, 10**14)), max_size=8))
def test_k_never_decreases_and_nothing_goes_negative(
    pool: Pool, amounts: list[tuple[bool, int]]
) -> None:
    for is_buy, amount in amounts:
        try:
            fill = pool.trade(amount=amount, is_buy=is_buy)
        except AmountTooSmall:
            continue
        after = fill.curve
        assert after.sol * after.token >= pool.sol * pool.token
        assert after.sol > 0
        assert after.token > 0
        assert min(fill.sol_amount, fill.token_amount, fill.lp_fee) >= 0
        assert min(fill.protocol_fee, fill.creator_fee) >= 0
        if is_buy:
            assert 0 < -fill.sol_delta <= amount  # never more than the budget
            assert after.sol - pool.sol == fill.sol_amount + fill.lp_fee
        else:
            assert fill.sol_delta > 0
            assert pool.sol - after.sol == fill.sol_amount - fill.lp_fee
        assert all(type(v) is int for v in (after.sol, after.token, fill.sol_delta))
        pool = after


@PROPERTY_SETTINGS
@given(pool=pools, amount=st.integers(1, 10**14))
def test_buying_then_selling_never_makes_money(pool: Pool, amount: int) -> None:
    try:
        bought = pool.buy(amount)
        sold = bought.curve.sell(bought.token_amount)
    except AmountTooSmall:
        return
    assert sold.sol_delta <= -bought.sol_delta
