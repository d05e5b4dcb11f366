"""Quotes: ``QUOTE_TRADE`` over the socket and ``GET /api/environments/{id}/quote`` answer what a
``VIRTUAL_TRADE`` would do now, computed by the code that executes trades (so a quote equals the
trade executed right after it, in either phase), and change nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from hypothesis import event, given, settings
from hypothesis import strategies as st

import protocol
from environments.models import Environment
from environments.services import environment_set_open
from protocol.errors import DomainError, ErrorCode
from tests.conftest import WALLET_A, WALLET_B, buy, join, open_socket, snapshot
from trading import quotes
from trading.curve import (
    DEFAULT_REAL_TOKEN,
    DEFAULT_STARTING_SOL,
    DEFAULT_TOTAL_SUPPLY,
    AmountTooSmall,
    Curve,
    format_price,
)
from trading.pool import DEFAULT_MIGRATION_FEE, Migration
from trading.services import TradeResult, trade_execute, trade_quote

SOL = 10**9
MakeEnvironment = Callable[..., Environment]


@pytest.fixture
def room(make_environment: MakeEnvironment) -> Environment:
    environment = make_environment(max_trade_lamports=None)
    join(environment, WALLET_A, WALLET_B)
    return environment


def quote(environment: Environment, amount: int, is_buy: bool) -> dict[str, Any]:
    before = snapshot()
    answer = protocol.dump(trade_quote(environment_id=environment.id, amount=amount, is_buy=is_buy))
    assert snapshot() == before  # a quote changes nothing
    return answer


def execute(environment: Environment, wallet: str, amount: int, is_buy: bool) -> TradeResult:
    return trade_execute(environment_id=environment.id, wallet=wallet, amount=amount, is_buy=is_buy)


def assert_quote_is_the_trade(answer: dict[str, Any], result: TradeResult) -> None:
    trade = result.trade
    assert answer["phase"] == trade.phase
    assert answer["solAmount"] == str(trade.sol_amount)
    assert answer["tokenAmount"] == str(trade.token_amount)
    assert answer["fees"] == {
        "protocol": str(trade.protocol_fee),
        "creator": str(trade.creator_fee),
        "lp": str(trade.lp_fee),
    }
    out = trade.token_amount if trade.is_buy else trade.sol_amount - trade.fee
    assert answer["amountOut"] == str(out)
    assert answer["averagePrice"] == format_price(trade.price)
    assert answer["refusedBy"] is None


@pytest.mark.django_db
def test_quotes_equal_the_trades_that_follow_in_both_phases(room: Environment) -> None:
    steps = [
        (WALLET_A, 2 * SOL, True),  # on the curve
        (WALLET_B, DEFAULT_STARTING_SOL, True),  # completes the curve
        (WALLET_A, 3 * SOL, True),  # in the pool
        (WALLET_A, 10**13, False),
        (WALLET_B, 10**14, False),
    ]
    for wallet, amount, is_buy in steps:
        answer = quote(room, amount, is_buy)
        result = execute(room, wallet, amount, is_buy)
        assert_quote_is_the_trade(answer, result)
        if is_buy:
            assert int(answer["unspent"]) == amount - trade_paid(result)
        if answer["graduates"]:
            assert answer["unspent"] == result.own.unspent
            pool_price = Environment.objects.get(pk=room.pk).market.spot_price
            assert answer["priceAfter"] == format_price(pool_price)
    assert [trade.phase for trade in room.trades.order_by("sequence")] == [
        "curve",
        "curve",
        "pool",
        "pool",
        "pool",
    ]


def trade_paid(result: TradeResult) -> int:
    return result.trade.sol_amount + result.trade.fee


@pytest.mark.django_db
def test_a_quote_on_the_curve_by_hand(room: Environment) -> None:
    answer = quote(room, SOL, True)
    # The contract's reference buy (tests/trading/test_curve.py), impact = cost / vS, rounded up.
    assert answer["tokenAmount"] == "34199203154141"
    assert answer["solAmount"] == "987654320"
    assert answer["fees"] == {"protocol": "9382717", "creator": "2962963", "lp": "0"}
    assert answer["priceImpactBps"] == 330  # 987654320 / 30e9 = 329.2 bps
    assert answer["priceBefore"] == "0.000000027958993476234855545"
    assert answer["unspent"] == str(SOL - 987_654_320 - 9_382_717 - 2_962_963)
    assert answer["graduates"] is False
    assert answer["phase"] == "curve"


@pytest.mark.django_db
def test_a_quote_names_the_limit_that_would_refuse_it(make_environment: MakeEnvironment) -> None:
    environment = make_environment()
    answer = quote(environment, 60 * SOL, True)
    assert answer["refusedBy"] == {"limit": "maxTradeSol", "value": str(50 * SOL)}
    assert answer["tokenAmount"] != "0"  # still says what the trade would do


@pytest.mark.django_db
def test_quote_refusals(room: Environment) -> None:
    with pytest.raises(DomainError) as unknown:
        trade_quote(environment_id="env_doesnotexist", amount=SOL, is_buy=True)
    assert unknown.value.code == ErrorCode.ENVIRONMENT_NOT_FOUND
    with pytest.raises(DomainError) as small:
        trade_quote(environment_id=room.id, amount=1, is_buy=True)
    assert (small.value.code, small.value.message) == (
        ErrorCode.INVALID_MESSAGE,
        "amount too small",
    )
    environment_set_open(environment_id=room.id, is_open=False)
    with pytest.raises(DomainError) as closed:
        trade_quote(environment_id=room.id, amount=SOL, is_buy=True)
    assert closed.value.code == ErrorCode.ENVIRONMENT_CLOSED


# --- over HTTP ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_rest_quote_is_the_socket_quote(client: Any, room: Environment) -> None:
    buy(room, WALLET_A, SOL)
    response = client.get(f"/api/environments/{room.id}/quote?amount={SOL}&isBuy=false")
    assert response.status_code == 200
    assert response.json() == quote(room, SOL, False)
    response = client.get(f"/api/environments/{room.id}/quote?amount={10**12}&isBuy=false")
    assert response.json()["tokenAmount"] == str(10**12)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("amount=1000000000", 400, "INVALID_MESSAGE"),  # isBuy missing
        ("amount=1000000000&isBuy=yes", 400, "INVALID_MESSAGE"),
        ("amount=-1&isBuy=true", 400, "INVALID_MESSAGE"),
        ("amount=abc&isBuy=true", 400, "INVALID_MESSAGE"),
        ("isBuy=true", 400, "INVALID_MESSAGE"),
        ("amount=1&isBuy=true", 400, "INVALID_MESSAGE"),  # too small
    ],
)
def test_rest_quote_errors(
    client: Any, room: Environment, query: str, status: int, code: str
) -> None:
    response = client.get(f"/api/environments/{room.id}/quote?{query}")
    assert (response.status_code, response.json()["code"]) == (status, code)


@pytest.mark.django_db
def test_rest_quote_of_an_unknown_environment(client: Any) -> None:
    response = client.get("/api/environments/env_nope/quote?amount=1000&isBuy=true")
    assert (response.status_code, response.json()["code"]) == (404, "ENVIRONMENT_NOT_FOUND")


# --- over the socket ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_quote_trade_needs_no_sign_in(make_environment: MakeEnvironment) -> None:
    environment = await database_sync_to_async(make_environment)()
    expected = await database_sync_to_async(quote)(environment, 2 * SOL, True)
    socket = await open_socket()  # anonymous
    frame = {
        "type": "QUOTE_TRADE",
        "requestId": "q1",
        "data": {"environmentId": environment.id, "amount": str(2 * SOL), "isBuy": True},
    }
    await socket.send_to(text_data=json.dumps(frame))
    answer = json.loads(await socket.receive_from(timeout=5))
    assert answer["type"] == "TRADE_QUOTE"
    assert answer["requestId"] == "q1"
    assert answer["data"] == expected
    frame["data"]["amount"] = "1"
    await socket.send_to(text_data=json.dumps(frame))
    error = json.loads(await socket.receive_from(timeout=5))
    assert (error["type"], error["data"]["code"]) == ("ERROR", "INVALID_MESSAGE")
    await socket.disconnect()


# --- the market model across the migration (pure) ------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    trades=st.lists(
        # Mostly buys, so that many runs complete the curve and trade on in the pool.
        st.tuples(
            st.sampled_from([True, True, False]), st.integers(1, 40 * SOL), st.integers(0, 2)
        ),
        max_size=40,
    )
)
def test_sol_and_tokens_are_conserved_across_the_migration(
    trades: list[tuple[bool, int, int]],
) -> None:
    """Three traders with 40 SOL each trade through the curve into the pool: what they hold, what
    the market holds and the fees that left add up, at every step."""
    market = quotes.Market(
        phase=quotes.CURVE,
        curve=Curve(),
        migration=Migration(initial_real_token=DEFAULT_REAL_TOKEN),
    )
    sol, tokens = [40 * SOL] * 3, [0] * 3
    fees_out = migration_fee = 0
    for is_buy, amount, who in trades:
        if not is_buy:
            amount = tokens[who] * (amount % 100 + 1) // 100
        if (sol[who] if is_buy else tokens[who]) < amount:
            continue
        try:
            result = quotes.quote(market, amount=amount, is_buy=is_buy)
        except AmountTooSmall:
            continue
        fill = result.fill
        sol[who] += fill.sol_delta
        tokens[who] += fill.token_delta
        fees_out += fill.protocol_fee + fill.creator_fee
        migration_fee += result.migration_fee
        if result.graduates:
            event("graduated")
            assert result.unspent == amount - fill.sol_amount - fill.fee >= 0
        market = market.after(result)
        held = market.pool.sol if market.pool else market.curve.real_sol
        assert sum(sol) + held + fees_out + migration_fee == 120 * SOL
        in_market = (
            market.pool.token - (DEFAULT_TOTAL_SUPPLY - DEFAULT_REAL_TOKEN)
            if market.pool
            else market.curve.real_token
        )
        assert sum(tokens) + in_market == DEFAULT_REAL_TOKEN
        assert min(*sol, *tokens) >= 0
    assert migration_fee in (0, DEFAULT_MIGRATION_FEE)
