"""Operators' trading limits: trade size in lamports (a buy by its budget, a sell by the SOL it
pays out before fees) and price impact in bps. A trade outside them is refused with
INVALID_MESSAGE naming the limit and its value, and nothing changes; the checks run in the
contract's order (closed, balance, amount too small, limits, slippage)."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest

from environments.models import Environment
from environments.services import environment_set_open
from protocol.errors import ErrorCode
from tests.conftest import WALLET_A, WALLET_B, assert_refused, buy, fresh, join
from trading.curve import DEFAULT_STARTING_SOL, DEFAULT_VIRTUAL_SOL, DEFAULT_VIRTUAL_TOKEN
from trading.services import trade_execute

pytestmark = pytest.mark.django_db

SOL = 10**9
MakeEnvironment = Callable[..., Environment]


def sell(environment: Environment, wallet: str, amount: int, **kwargs: Any) -> Any:
    return trade_execute(
        environment_id=environment.id, wallet=wallet, amount=amount, is_buy=False, **kwargs
    )


def room(make_environment: MakeEnvironment, **limits: Any) -> Environment:
    environment = make_environment(**limits)
    join(environment, WALLET_A, WALLET_B)
    return environment


def refused_by(limit: str, value: str, call: Callable[[], object]) -> None:
    error = assert_refused(ErrorCode.INVALID_MESSAGE, call)
    assert error.details == {"limit": limit, "value": value}
    assert value in error.message


def test_the_default_maximum_is_50_sol(make_environment: MakeEnvironment) -> None:
    environment = room(make_environment)
    assert environment.max_trade_lamports == 50 * SOL
    refused_by("maxTradeSol", str(50 * SOL), lambda: buy(environment, WALLET_A, 50 * SOL + 1))
    buy(environment, WALLET_A, 50 * SOL)  # exactly the maximum is allowed
    # One participant cannot end the demo curve (about 85 SOL) in one trade.
    assert fresh(environment).real_token_reserves > 0


def test_a_sell_is_measured_by_the_sol_it_pays_before_fees(
    make_environment: MakeEnvironment,
) -> None:
    environment = room(make_environment, max_trade_lamports=2 * SOL)
    tokens = buy(environment, WALLET_A, 2 * SOL).trade.token_amount
    buy(environment, WALLET_B, 2 * SOL)  # the price rises: A's tokens are now worth more
    out = fresh(environment).curve.sell(tokens).sol_amount
    assert out > 2 * SOL
    refused_by("maxTradeSol", str(2 * SOL), lambda: sell(environment, WALLET_A, tokens))
    sell(environment, WALLET_A, tokens // 2)  # worth about 1 SOL: allowed


def test_minimum_trade(make_environment: MakeEnvironment) -> None:
    environment = room(make_environment, min_trade_lamports=SOL // 10)
    refused_by("minTradeSol", str(SOL // 10), lambda: buy(environment, WALLET_A, SOL // 10 - 1))
    tokens = buy(environment, WALLET_A, SOL // 10).trade.token_amount
    # A sell worth less than 0.1 SOL before fees is too small for this room.
    refused_by("minTradeSol", str(SOL // 10), lambda: sell(environment, WALLET_A, tokens // 2))


def impact_bps(sol_amount: int, token_amount: int) -> Fraction:
    """|average price / spot price - 1| * 10^4 on the default curve's start, exactly."""
    spot = Fraction(DEFAULT_VIRTUAL_SOL, DEFAULT_VIRTUAL_TOKEN)
    return abs(Fraction(sol_amount, token_amount) / spot - 1) * 10_000


def test_maximum_price_impact(make_environment: MakeEnvironment) -> None:
    environment = room(make_environment, max_price_impact_bps=100)
    half = environment.curve.buy(SOL // 2)
    fifth = environment.curve.buy(SOL // 5)
    # On a curve the impact is cost / vS: 0.4938 SOL of 30 is 165 bps, 0.1975 SOL 66.
    assert math.ceil(impact_bps(half.sol_amount, half.token_amount)) == 165
    assert math.ceil(impact_bps(fifth.sol_amount, fifth.token_amount)) == 66
    refused_by("maxPriceImpactBps", "100", lambda: buy(environment, WALLET_A, SOL // 2))
    buy(environment, WALLET_A, SOL // 5)


def test_limits_apply_in_the_pool(make_environment: MakeEnvironment) -> None:
    environment = room(make_environment, max_trade_lamports=None, starting_sol_balance=200 * SOL)
    buy(environment, WALLET_A, 100 * SOL)  # graduates
    Environment.objects.filter(pk=environment.pk).update(max_trade_lamports=SOL)
    refused_by("maxTradeSol", str(SOL), lambda: buy(environment, WALLET_B, SOL + 1))
    refused_by("maxTradeSol", str(SOL), lambda: sell(environment, WALLET_A, 10**14))
    buy(environment, WALLET_B, SOL)


# --- the order of the checks ---------------------------------------------------------------------


def test_closed_beats_limits(make_environment: MakeEnvironment) -> None:
    environment = room(make_environment)
    environment_set_open(environment_id=environment.id, is_open=False)
    assert_refused(ErrorCode.ENVIRONMENT_CLOSED, lambda: buy(environment, WALLET_A, 60 * SOL))


def test_balance_beats_limits(make_environment: MakeEnvironment) -> None:
    environment = room(make_environment)
    assert_refused(
        ErrorCode.INSUFFICIENT_BALANCE,
        lambda: buy(environment, WALLET_A, DEFAULT_STARTING_SOL + 1),
    )


def test_too_small_beats_limits(make_environment: MakeEnvironment) -> None:
    environment = room(make_environment, min_trade_lamports=SOL)
    assert_refused(
        ErrorCode.INVALID_MESSAGE,
        lambda: buy(environment, WALLET_A, 1),
        message="amount too small",
    )


def test_limits_beat_slippage(make_environment: MakeEnvironment) -> None:
    environment = room(make_environment)
    refused_by(
        "maxTradeSol",
        str(50 * SOL),
        lambda: buy(environment, WALLET_A, 60 * SOL, min_amount_out=10**18),
    )
