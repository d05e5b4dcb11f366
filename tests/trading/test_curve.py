"""Tests for the integer bonding-curve math in :mod:`trading.curve` (no Django, no database)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from trading.curve import (
    DEFAULT_REAL_TOKEN,
    DEFAULT_VIRTUAL_SOL,
    DEFAULT_VIRTUAL_TOKEN,
    LAMPORTS_PER_SOL,
    AmountTooSmall,
    Curve,
    CurveComplete,
    Fill,
    fee,
    format_price,
)

SOL = LAMPORTS_PER_SOL
START_PRODUCT = DEFAULT_VIRTUAL_SOL * DEFAULT_VIRTUAL_TOKEN
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def no_fee_curve() -> Curve:
    return Curve(protocol_fee_bps=100, creator_fee_bps=0)


def assert_int(*values: object) -> None:
    for value in values:
        assert type(value) is int, f"{value!r} is {type(value).__name__}, not int"


def assert_curve_invariants(curve: Curve) -> None:
    vs, vt, rs, rt = curve.virtual_sol, curve.virtual_token, curve.real_sol, curve.real_token
    assert_int(vs, vt, rs, rt, curve.protocol_fee_bps, curve.creator_fee_bps)
    assert vs * vt >= START_PRODUCT
    assert vs - DEFAULT_VIRTUAL_SOL == rs
    assert DEFAULT_VIRTUAL_TOKEN - vt == DEFAULT_REAL_TOKEN - rt
    assert rs >= 0
    assert rt >= 0
    assert vs > 0
    assert vt > 0


def assert_fill_ints(fill: Fill) -> None:
    assert_int(
        fill.sol_amount,
        fill.token_amount,
        fill.protocol_fee,
        fill.creator_fee,
        fill.fee,
        fill.sol_delta,
        fill.token_delta,
    )
    assert fill.protocol_fee >= 0
    assert fill.creator_fee >= 0
    assert fill.sol_amount > 0
    assert fill.token_amount > 0


# --- reference vectors -------------------------------------------------------------------------


def test_default_buy_one_sol():
    curve = Curve()
    assert (curve.protocol_fee_bps, curve.creator_fee_bps) == (95, 30)
    fill = curve.buy(1_000_000_000)
    assert fill.is_buy
    assert fill.token_amount == 34_199_203_154_141
    assert fill.sol_amount == 987_654_320
    assert fill.protocol_fee == 9_382_717
    assert fill.creator_fee == 2_962_963
    assert fill.fee == 9_382_717 + 2_962_963
    paid = fill.sol_amount + fill.protocol_fee + fill.creator_fee
    assert fill.sol_delta == -paid
    assert paid <= 1_000_000_000
    assert fill.token_delta == 34_199_203_154_141
    assert_fill_ints(fill)
    assert_curve_invariants(fill.curve)
    # The original curve is untouched (frozen dataclass, new curve in the fill).
    assert curve == Curve()


def test_buy_one_sol_at_100_bps():
    fill = no_fee_curve().buy(1_000_000_000)
    assert fill.token_amount == 34_281_150_096_027
    assert -fill.sol_delta <= 1_000_000_000


def test_reference_sequence_at_100_bps():
    curve = no_fee_curve()

    a_buy = curve.buy(2_000_000_000)
    assert a_buy.token_amount == 66_439_628_426_255
    assert a_buy.sol_amount == 1_980_198_018
    assert a_buy.fee == 19_801_981
    assert a_buy.creator_fee == 0
    assert a_buy.curve.virtual_sol == 31_980_198_018
    assert a_buy.curve.virtual_token == 1_006_560_371_573_745
    assert -a_buy.sol_delta <= 2_000_000_000
    assert_curve_invariants(a_buy.curve)

    b_buy = a_buy.curve.buy(500_000_000)
    assert b_buy.token_amount == 15_343_908_044_576
    assert b_buy.sol_amount == 495_049_503
    assert b_buy.fee == 4_950_496
    assert b_buy.curve.virtual_sol == 32_475_247_521
    assert b_buy.curve.virtual_token == 991_216_463_529_169
    assert -b_buy.sol_delta <= 500_000_000
    assert_curve_invariants(b_buy.curve)

    a_sell = b_buy.curve.sell(66_439_628_426_255)
    assert not a_sell.is_buy
    assert a_sell.sol_amount == 2_040_023_590
    assert a_sell.fee == 20_400_236
    assert a_sell.sol_delta == 2_040_023_590 - 20_400_236
    assert a_sell.token_delta == -66_439_628_426_255
    assert a_sell.curve.virtual_sol == 30_435_223_931
    assert a_sell.curve.virtual_token == 1_057_656_091_955_424
    assert_curve_invariants(a_sell.curve)


def test_trade_dispatches_to_buy_and_sell():
    curve = no_fee_curve()
    assert curve.trade(amount=2_000_000_000, is_buy=True) == curve.buy(2_000_000_000)
    after = curve.buy(2_000_000_000).curve
    assert after.trade(amount=10**12, is_buy=False) == after.sell(10**12)


def test_default_spot_price_and_market_cap():
    curve = Curve()
    price = curve.spot_price
    assert isinstance(price, Decimal)
    text = format_price(price)
    assert text == "0.000000027958993476234855545"
    assert "e" not in text.lower()
    significant = text.replace(".", "").lstrip("0")
    assert len(significant) >= 10
    assert Decimal(text) == price
    assert curve.market_cap == 27_958_993_476
    assert_int(curve.market_cap)


def test_fill_price_formats_without_exponent():
    fill = Curve().buy(SOL)
    text = format_price(fill.price)
    assert "e" not in text.lower()
    assert len(text.replace(".", "").lstrip("0")) >= 10


# --- edge cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [-5, 0, 1, 2])
def test_tiny_buy_raises(amount):
    with pytest.raises(AmountTooSmall):
        Curve().buy(amount)


def test_smallest_buy_that_fills():
    # At 95+30 bps, 3 lamports leave a net of 1 lamport, which buys a few raw tokens.
    fill = Curve().buy(3)
    assert fill.token_amount > 0
    assert -fill.sol_delta <= 3


@pytest.mark.parametrize("amount", [0, -1])
def test_sell_of_nothing_raises(amount):
    curve = Curve().buy(SOL).curve
    with pytest.raises(AmountTooSmall):
        curve.sell(amount)


def test_sell_worth_zero_lamports_raises():
    curve = Curve().buy(SOL).curve
    with pytest.raises(AmountTooSmall):
        curve.sell(1)  # out == 0


def test_sell_eaten_by_fees_raises():
    curve = Curve().buy(SOL).curve
    # Smallest sell whose gross output is exactly 1 lamport; the rounded-up fees take it all.
    amount = -(-curve.virtual_token // (curve.virtual_sol - 1))
    assert amount * curve.virtual_sol // (curve.virtual_token + amount) == 1
    with pytest.raises(AmountTooSmall):
        curve.sell(amount)
    # Without fees the same sell pays out one lamport.
    free = Curve(
        virtual_sol=curve.virtual_sol,
        virtual_token=curve.virtual_token,
        real_sol=curve.real_sol,
        real_token=curve.real_token,
        protocol_fee_bps=0,
        creator_fee_bps=0,
    )
    assert free.sell(amount).sol_delta == 1


def test_huge_buy_is_capped_and_completes_the_curve():
    curve = Curve()
    budget = 1_000 * SOL
    fill = curve.buy(budget)
    assert fill.token_amount == DEFAULT_REAL_TOKEN
    assert fill.curve.real_token == 0
    assert fill.curve.complete
    assert not curve.complete
    assert -fill.sol_delta <= budget
    assert_fill_ints(fill)
    assert_curve_invariants(fill.curve)


def test_complete_curve_refuses_every_trade():
    done = Curve().buy(1_000 * SOL).curve
    assert done.complete
    with pytest.raises(CurveComplete):
        done.buy(SOL)
    with pytest.raises(CurveComplete):
        done.buy(0)
    with pytest.raises(CurveComplete):
        done.sell(10**12)
    with pytest.raises(CurveComplete):
        done.sell(0)
    with pytest.raises(CurveComplete):
        done.trade(amount=SOL, is_buy=True)
    with pytest.raises(CurveComplete):
        done.trade(amount=10**12, is_buy=False)


def test_fee_rounds_up():
    assert fee(1, 95) == 1
    assert fee(0, 95) == 0
    assert fee(10_000, 95) == 95
    assert fee(10_001, 95) == 96
    assert fee(123, 0) == 0
    assert_int(fee(1, 95))


@PROPERTY_SETTINGS
@given(st.integers(0, 10**15), st.integers(0, 10_000))
def test_fee_is_the_ceiling(amount, bps):
    result = fee(amount, bps)
    assert_int(result)
    assert result * 10_000 >= amount * bps
    assert (result - 1) * 10_000 < amount * bps or result == 0


# --- property tests ------------------------------------------------------------------------------

TRADERS = 4
STARTING_BALANCE = 1_000 * SOL
bps = st.integers(0, 500)
budgets = st.integers(1, 200 * SOL)
steps = st.lists(
    st.tuples(
        st.integers(0, TRADERS - 1),  # trader
        st.booleans(),  # is_buy
        budgets,  # SOL budget, used for a buy
        st.one_of(st.just(10_000), st.integers(0, 10_000)),  # share of holdings sold, in bps
    ),
    max_size=40,
)


@PROPERTY_SETTINGS
@given(protocol_bps=bps, creator_bps=bps, steps=steps)
def test_random_trading_keeps_invariants(protocol_bps, creator_bps, steps):
    curve = Curve(protocol_fee_bps=protocol_bps, creator_fee_bps=creator_bps)
    balances = [STARTING_BALANCE] * TRADERS
    holdings = [0] * TRADERS
    fees_collected = 0
    total_sol = sum(balances)

    for trader, is_buy, budget, share in steps:
        amount = min(budget, balances[trader]) if is_buy else holdings[trader] * share // 10_000

        if curve.complete:
            event("trade on a complete curve")
            with pytest.raises(CurveComplete):
                curve.trade(amount=amount, is_buy=is_buy)
            continue
        try:
            fill = curve.trade(amount=amount, is_buy=is_buy)
        except AmountTooSmall:
            if is_buy:
                assert amount < SOL  # any budget of 1 SOL or more buys something
            else:
                # Only a sell that pays the seller nothing after fees is refused.
                out = amount * curve.virtual_sol // (curve.virtual_token + amount)
                assert out - fee(out, protocol_bps) - fee(out, creator_bps) <= 0
            continue

        event("buy" if is_buy else "sell")
        assert fill.is_buy is is_buy
        assert_fill_ints(fill)
        if is_buy:
            assert -fill.sol_delta <= amount  # never more than the budget
            assert fill.sol_delta < 0
            assert fill.token_delta > 0
        else:
            assert fill.token_amount == amount
            assert fill.sol_delta > 0
            assert fill.token_delta < 0
        assert format_price(fill.price).lower().count("e") == 0

        balances[trader] += fill.sol_delta
        holdings[trader] += fill.token_delta
        fees_collected += fill.fee
        curve = fill.curve

        assert_curve_invariants(curve)
        assert balances[trader] >= 0
        assert holdings[trader] >= 0
        # SOL conservation: balances + real reserves + fees never change.
        assert sum(balances) + curve.real_sol + fees_collected == total_sol
        # Token conservation: every token held came out of the real reserve.
        assert sum(holdings) + curve.real_token == DEFAULT_REAL_TOKEN
        assert_int(*balances, *holdings, fees_collected)


@PROPERTY_SETTINGS
@given(
    protocol_bps=bps,
    creator_bps=bps,
    warmup=st.integers(0, 60 * SOL),
    budget=st.integers(SOL, 200 * SOL),
)
def test_buy_then_sell_never_profits(protocol_bps, creator_bps, warmup, budget):
    curve = Curve(protocol_fee_bps=protocol_bps, creator_fee_bps=creator_bps)
    if warmup >= SOL:
        curve = curve.buy(warmup).curve
    assert not curve.complete
    buy = curve.buy(budget)
    assert -buy.sol_delta <= budget
    if buy.curve.complete:
        event("buy completed the curve")
        with pytest.raises(CurveComplete):
            buy.curve.sell(buy.token_amount)
        return
    try:
        sell = buy.curve.sell(buy.token_amount)
    except AmountTooSmall:
        event("sell paid nothing")
        return  # nothing came back at all, which is certainly no profit
    event("round trip")
    assert sell.sol_delta < -buy.sol_delta
    assert sell.sol_amount < buy.sol_amount  # even before fees
    assert_fill_ints(sell)
    assert_curve_invariants(sell.curve)
