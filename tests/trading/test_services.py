"""Tests for the write side of trading: :func:`trading.services.trade_execute` and the
publish-after-commit contract of :mod:`kernel.realtime` (environments' services are tested in
``tests/environments/test_services.py``; the helpers both use are in ``tests/conftest.py``).

Every refusal must raise :class:`DomainError` with the contract's code and leave the database
exactly as it was; every success must move exactly the numbers of :class:`trading.curve.Curve`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, transaction

import protocol
from environments.models import ChatMessage, Environment, Position
from environments.services import chat_post, environment_set_open
from idempotency.models import Receipt
from kernel.realtime import Event
from protocol.errors import DomainError, ErrorCode
from tests.conftest import (
    STRANGER,
    WALLET_A,
    WALLET_B,
    assert_refused,
    buy,
    fresh,
    join,
    position,
    snapshot,
)
from trading import quotes
from trading.curve import (
    DEFAULT_CREATOR_FEE_BPS,
    DEFAULT_PROTOCOL_FEE_BPS,
    DEFAULT_REAL_TOKEN,
    DEFAULT_STARTING_SOL,
    DEFAULT_VIRTUAL_SOL,
    DEFAULT_VIRTUAL_TOKEN,
    LAMPORTS_PER_SOL,
    fee,
)
from trading.models import MarketEvent, MinuteCandle, Trade
from trading.services import TradeResult, trade_execute
from trading.state import Phase

pytestmark = pytest.mark.django_db

SOL = LAMPORTS_PER_SOL
WALLET_C = "WalletCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"

MakeEnvironment = Callable[..., Environment]


# --- helpers -------------------------------------------------------------------------------------


def sell(environment: Environment, wallet: str, amount: int, **kwargs: Any) -> TradeResult:
    return trade_execute(
        environment_id=environment.id, wallet=wallet, amount=amount, is_buy=False, **kwargs
    )


@pytest.fixture
def unlimited(make_environment: MakeEnvironment) -> Environment:
    """The default environment without the default trade-size limit, A and B joined."""
    environment = make_environment(max_trade_lamports=None)
    join(environment, WALLET_A, WALLET_B)
    return environment


@pytest.fixture
def env100(make_environment: MakeEnvironment) -> Environment:
    """The fixture curve of the contract: pump.fun defaults with fees 100 + 0 bps."""
    return make_environment(protocol_fee_bps=100, creator_fee_bps=0)


# --- successful trades ---------------------------------------------------------------------------


def test_buy_moves_exactly_the_curve_numbers(joined: Environment) -> None:
    expected = joined.curve.buy(SOL)
    # The contract's reference point at 95 + 30 bps.
    assert expected.token_amount == 34_199_203_154_141
    assert (expected.sol_amount, expected.protocol_fee, expected.creator_fee) == (
        987_654_320,
        9_382_717,
        2_962_963,
    )

    result = buy(joined, WALLET_A, SOL)

    environment = fresh(joined)
    assert environment.virtual_sol_reserves == expected.curve.virtual_sol
    assert environment.virtual_token_reserves == expected.curve.virtual_token
    assert environment.real_sol_reserves == expected.curve.real_sol == expected.sol_amount
    assert environment.real_token_reserves == expected.curve.real_token
    assert environment.sequence == 1

    paid = expected.sol_amount + expected.protocol_fee + expected.creator_fee
    assert paid <= SOL
    a = position(joined, WALLET_A)
    assert a.sol_balance == DEFAULT_STARTING_SOL - paid
    assert a.token_balance == expected.token_amount
    assert (result.position.sol_balance, result.position.token_balance) == (
        a.sol_balance,
        a.token_balance,
    )
    b = position(joined, WALLET_B)
    assert (b.sol_balance, b.token_balance) == (DEFAULT_STARTING_SOL, 0)

    trade = Trade.objects.get()
    assert trade.pk == result.trade.pk
    assert trade.environment_id == joined.id
    assert trade.wallet == WALLET_A
    assert trade.is_buy is True
    assert trade.amount == SOL
    assert trade.sequence == 1
    assert trade.sol_amount == expected.sol_amount
    assert trade.token_amount == expected.token_amount
    assert trade.protocol_fee == fee(expected.sol_amount, DEFAULT_PROTOCOL_FEE_BPS)
    assert trade.creator_fee == fee(expected.sol_amount, DEFAULT_CREATOR_FEE_BPS)
    assert trade.fee == expected.fee
    assert trade.virtual_sol_after == environment.virtual_sol_reserves
    assert trade.virtual_token_after == environment.virtual_token_reserves


def test_sell_reverses_the_buy(joined: Environment) -> None:
    bought = joined.curve.buy(3 * SOL)
    buy(joined, WALLET_A, 3 * SOL)
    after_buy = fresh(joined)
    expected = after_buy.curve.sell(bought.token_amount)

    result = sell(joined, WALLET_A, bought.token_amount)

    environment = fresh(joined)
    assert environment.virtual_sol_reserves == expected.curve.virtual_sol
    assert (
        environment.virtual_token_reserves
        == expected.curve.virtual_token
        == (DEFAULT_VIRTUAL_TOKEN)
    )
    assert environment.real_sol_reserves == expected.curve.real_sol
    assert environment.real_token_reserves == DEFAULT_REAL_TOKEN
    # The curve keeps the rounding dust; it never pays out more than it took.
    assert environment.real_sol_reserves >= 0
    assert environment.virtual_sol_reserves - environment.real_sol_reserves == (DEFAULT_VIRTUAL_SOL)
    assert environment.sequence == 2

    received = expected.sol_amount - expected.protocol_fee - expected.creator_fee
    a = position(joined, WALLET_A)
    paid = bought.sol_amount + bought.fee
    assert a.sol_balance == DEFAULT_STARTING_SOL - paid + received
    assert a.token_balance == 0
    assert result.position.sol_balance == a.sol_balance

    trade = Trade.objects.get(sequence=2)
    assert trade.is_buy is False
    assert trade.amount == bought.token_amount
    assert trade.token_amount == bought.token_amount
    assert trade.sol_amount == expected.sol_amount
    assert trade.protocol_fee == fee(expected.sol_amount, DEFAULT_PROTOCOL_FEE_BPS)
    assert trade.creator_fee == fee(expected.sol_amount, DEFAULT_CREATOR_FEE_BPS)
    assert list(Trade.objects.order_by("sequence").values_list("sequence", flat=True)) == [1, 2]


def test_partial_sell_keeps_the_rest(joined: Environment) -> None:
    bought = buy(joined, WALLET_A, SOL).trade.token_amount
    expected = fresh(joined).curve.sell(bought // 3)
    sell(joined, WALLET_A, bought // 3)
    a = position(joined, WALLET_A)
    assert a.token_balance == bought - bought // 3
    assert fresh(joined).virtual_token_reserves == expected.curve.virtual_token


def test_fixture_curve_vector_at_100_plus_0_bps(env100: Environment) -> None:
    join(env100, WALLET_A, WALLET_B)

    a_buy = buy(env100, WALLET_A, 2_000_000_000).trade
    assert a_buy.token_amount == 66_439_628_426_255
    b_buy = buy(env100, WALLET_B, 500_000_000).trade
    assert b_buy.token_amount == 15_343_908_044_576
    a_sell = sell(env100, WALLET_A, 66_439_628_426_255).trade

    rows = list(Trade.objects.filter(environment=env100).order_by("sequence"))
    assert [row.pk for row in rows] == [a_buy.pk, b_buy.pk, a_sell.pk]
    assert [(row.sequence, row.wallet, row.is_buy) for row in rows] == [
        (1, WALLET_A, True),
        (2, WALLET_B, True),
        (3, WALLET_A, False),
    ]
    assert [row.token_amount for row in rows] == [
        66_439_628_426_255,
        15_343_908_044_576,
        66_439_628_426_255,
    ]
    assert all(row.creator_fee == 0 for row in rows)
    last = rows[-1]
    assert last.sol_amount == 2_040_023_590
    assert last.protocol_fee == 20_400_236
    assert last.fee == 20_400_236
    assert last.virtual_sol_after == 30_435_223_931
    assert last.virtual_token_after == 1_057_656_091_955_424

    environment = fresh(env100)
    assert environment.virtual_sol_reserves == 30_435_223_931
    assert environment.virtual_token_reserves == 1_057_656_091_955_424
    assert environment.real_sol_reserves == 30_435_223_931 - DEFAULT_VIRTUAL_SOL
    assert environment.real_token_reserves == DEFAULT_REAL_TOKEN - 15_343_908_044_576
    assert environment.sequence == 3

    a = position(env100, WALLET_A)
    first = rows[0]
    assert a.token_balance == 0
    assert a.sol_balance == (
        DEFAULT_STARTING_SOL
        - (first.sol_amount + first.protocol_fee)
        + (2_040_023_590 - 20_400_236)
    )
    b = position(env100, WALLET_B)
    assert b.token_balance == 15_343_908_044_576
    assert b.sol_balance == DEFAULT_STARTING_SOL - rows[1].sol_amount - rows[1].protocol_fee


def test_buy_that_completes_the_curve_pays_only_for_what_is_left(
    unlimited: Environment,
) -> None:
    expected = unlimited.curve.buy(DEFAULT_STARTING_SOL)
    assert expected.token_amount == DEFAULT_REAL_TOKEN  # 100 SOL buys out the curve
    result = buy(unlimited, WALLET_A, DEFAULT_STARTING_SOL)
    environment = fresh(unlimited)
    assert environment.complete
    assert environment.real_token_reserves == 0
    assert environment.phase == Phase.POOL  # graduated: see tests/trading/test_graduation.py
    a = position(unlimited, WALLET_A)
    assert a.token_balance == DEFAULT_REAL_TOKEN
    assert a.sol_balance == DEFAULT_STARTING_SOL - expected.sol_amount - expected.fee > 0
    assert result.own.unspent == str(a.sol_balance)


def test_slippage_guard_at_exactly_the_result_passes(joined: Environment) -> None:
    tokens = joined.curve.buy(SOL).token_amount
    buy(joined, WALLET_A, SOL, min_amount_out=tokens)
    out = fresh(joined).curve.sell(tokens)
    received = out.sol_amount - out.fee
    sell(joined, WALLET_A, tokens, min_amount_out=received)
    assert fresh(joined).sequence == 2


# --- refusals: right code, nothing written -------------------------------------------------------


def test_not_joined_is_unauthorized(joined: Environment) -> None:
    buy(joined, WALLET_A, SOL)  # some state to compare
    assert_refused(ErrorCode.UNAUTHORIZED, lambda: buy(joined, STRANGER, SOL))
    assert_refused(ErrorCode.UNAUTHORIZED, lambda: sell(joined, STRANGER, 1))


def test_unknown_environment(joined: Environment) -> None:
    for is_buy in (True, False):
        assert_refused(
            ErrorCode.ENVIRONMENT_NOT_FOUND,
            lambda is_buy=is_buy: trade_execute(
                environment_id="env_doesnotexist", wallet=WALLET_A, amount=SOL, is_buy=is_buy
            ),
        )


def test_closed_environment(joined: Environment) -> None:
    tokens = buy(joined, WALLET_A, SOL).trade.token_amount
    environment_set_open(environment_id=joined.id, is_open=False)
    assert_refused(ErrorCode.ENVIRONMENT_CLOSED, lambda: buy(joined, WALLET_A, SOL))
    assert_refused(ErrorCode.ENVIRONMENT_CLOSED, lambda: sell(joined, WALLET_A, tokens))
    # Reopening lets trades through again.
    environment_set_open(environment_id=joined.id, is_open=True)
    sell(joined, WALLET_A, tokens)
    assert fresh(joined).sequence == 2


def complete_without_pool(environment: Environment) -> None:
    """A curve completed before graduation existed: complete, still in the curve phase."""
    Environment.objects.filter(pk=environment.pk).update(real_token_reserves=0)


def test_complete_curve_never_migrated_is_closed(joined: Environment) -> None:
    tokens = buy(joined, WALLET_A, SOL).trade.token_amount
    complete_without_pool(joined)
    assert_refused(ErrorCode.ENVIRONMENT_CLOSED, lambda: buy(joined, WALLET_B, SOL))
    assert_refused(ErrorCode.ENVIRONMENT_CLOSED, lambda: sell(joined, WALLET_A, tokens))


def test_insufficient_sol(joined: Environment) -> None:
    assert_refused(
        ErrorCode.INSUFFICIENT_BALANCE, lambda: buy(joined, WALLET_A, DEFAULT_STARTING_SOL + 1)
    )


def test_insufficient_tokens(joined: Environment) -> None:
    assert_refused(ErrorCode.INSUFFICIENT_BALANCE, lambda: sell(joined, WALLET_A, 1))
    tokens = buy(joined, WALLET_A, SOL).trade.token_amount
    assert_refused(ErrorCode.INSUFFICIENT_BALANCE, lambda: sell(joined, WALLET_A, tokens + 1))


def test_spending_the_whole_balance_is_allowed(make_environment: MakeEnvironment) -> None:
    environment = make_environment(starting_sol_balance=2 * SOL)
    join(environment, WALLET_A)
    buy(environment, WALLET_A, 2 * SOL)
    assert position(environment, WALLET_A).sol_balance >= 0


@pytest.mark.parametrize(
    ("is_buy", "amount"),
    [(True, 0), (True, 1), (True, -SOL), (False, 0), (False, 1), (False, -5)],
    ids=["buy-0", "buy-1-lamport", "buy-negative", "sell-0", "sell-1-raw", "sell-negative"],
)
def test_amount_too_small(joined: Environment, is_buy: bool, amount: int) -> None:
    buy(joined, WALLET_A, SOL)  # A holds tokens, so a 1-raw sell is not a balance problem
    assert_refused(
        ErrorCode.INVALID_MESSAGE,
        lambda: trade_execute(
            environment_id=joined.id, wallet=WALLET_A, amount=amount, is_buy=is_buy
        ),
        message="amount too small",
    )


def test_buy_slippage(joined: Environment) -> None:
    tokens = joined.curve.buy(SOL).token_amount
    error = assert_refused(
        ErrorCode.SLIPPAGE_EXCEEDED, lambda: buy(joined, WALLET_A, SOL, min_amount_out=tokens + 1)
    )
    assert error.details is not None
    assert error.details["amountOut"] == str(tokens)


def test_sell_slippage_compares_lamports_after_fees(joined: Environment) -> None:
    tokens = buy(joined, WALLET_A, SOL).trade.token_amount
    out = fresh(joined).curve.sell(tokens)
    received = out.sol_amount - out.protocol_fee - out.creator_fee
    assert received < out.sol_amount
    assert_refused(
        ErrorCode.SLIPPAGE_EXCEEDED,
        lambda: sell(joined, WALLET_A, tokens, min_amount_out=received + 1),
    )


def test_closed_beats_insufficient_balance(joined: Environment) -> None:
    environment_set_open(environment_id=joined.id, is_open=False)
    assert_refused(
        ErrorCode.ENVIRONMENT_CLOSED, lambda: buy(joined, WALLET_A, DEFAULT_STARTING_SOL + 1)
    )
    assert_refused(ErrorCode.ENVIRONMENT_CLOSED, lambda: sell(joined, WALLET_A, 10**12))


def test_complete_beats_insufficient_balance(joined: Environment) -> None:
    complete_without_pool(joined)
    assert_refused(
        ErrorCode.ENVIRONMENT_CLOSED, lambda: buy(joined, WALLET_B, DEFAULT_STARTING_SOL + 1)
    )


def test_insufficient_beats_amount_too_small(make_environment: MakeEnvironment) -> None:
    environment = make_environment(starting_sol_balance=0)
    join(environment, WALLET_A)
    # 1 lamport buys nothing and 1 raw token sells for nothing, but the wallet has neither.
    assert_refused(ErrorCode.INSUFFICIENT_BALANCE, lambda: buy(environment, WALLET_A, 1))
    assert_refused(ErrorCode.INSUFFICIENT_BALANCE, lambda: sell(environment, WALLET_A, 1))


def test_insufficient_beats_slippage(joined: Environment) -> None:
    assert_refused(
        ErrorCode.INSUFFICIENT_BALANCE,
        lambda: buy(joined, WALLET_A, DEFAULT_STARTING_SOL + 1, min_amount_out=10**18),
    )
    assert_refused(
        ErrorCode.INSUFFICIENT_BALANCE,
        lambda: sell(joined, WALLET_A, 10**12, min_amount_out=10**18),
    )


def test_too_small_beats_slippage(joined: Environment) -> None:
    assert_refused(
        ErrorCode.INVALID_MESSAGE,
        lambda: buy(joined, WALLET_A, 1, min_amount_out=1),
        message="amount too small",
    )


# --- broadcasts after commit ---------------------------------------------------------------------


def test_trade_publishes_one_event_after_commit(
    joined: Environment,
    dispatched: list[Event],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = buy(joined, WALLET_A, SOL)
        assert dispatched == []  # nothing leaves before the commit
    assert len(callbacks) == 2  # the broadcast, and the trader's REWARD_UPDATE refresh
    assert len(dispatched) == 1

    event = dispatched[0]
    environment = fresh(joined)
    a = position(joined, WALLET_A)
    assert event.type == "VIRTUAL_TRADE_EXECUTED"
    assert event.environment_id == joined.id
    assert event.sequence == 1
    data = protocol.dump(event.data)
    assert data["environmentId"] == joined.id
    assert data["sequence"] == 1
    assert data["trade"]["sequence"] == 1
    assert data["trade"]["id"] == str(result.trade.pk)
    assert data["trade"]["userId"] == WALLET_A
    assert data["trade"]["isBuy"] is True
    assert data["trade"]["amount"] == str(SOL)
    assert data["trade"]["solAmount"] == str(result.trade.sol_amount)
    assert data["trade"]["tokenAmount"] == str(a.token_balance)
    assert data["trade"]["fee"] == str(result.trade.fee)
    assert data["newReserves"] == {
        "sol": str(environment.virtual_sol_reserves),
        "token": str(environment.virtual_token_reserves),
    }
    assert "balance" not in data  # the balance goes only to the trader's own copy
    own = protocol.dump(result.own)
    assert own == {**data, "balance": {"sol": str(a.sol_balance), "token": str(a.token_balance)}}


def test_failed_trade_publishes_nothing(
    joined: Environment,
    dispatched: list[Event],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    failures: list[Callable[[], object]] = [
        lambda: buy(joined, WALLET_A, DEFAULT_STARTING_SOL + 1),
        lambda: sell(joined, WALLET_A, 1),
        lambda: buy(joined, WALLET_A, 1),
        lambda: buy(joined, WALLET_A, SOL, min_amount_out=10**18),
        lambda: buy(joined, STRANGER, SOL),
    ]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        for failure in failures:
            with pytest.raises(DomainError):
                failure()
    assert callbacks == []
    assert dispatched == []


@pytest.mark.django_db(transaction=True)
def test_rolled_back_trade_publishes_nothing(
    make_environment: MakeEnvironment, dispatched: list[Event]
) -> None:
    environment = make_environment()
    join(environment, WALLET_A)
    before = snapshot()

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        buy(environment, WALLET_A, SOL)
        chat_post(environment_id=environment.id, wallet=WALLET_A, message="never seen")
        raise Rollback

    assert dispatched == []
    assert snapshot() == before

    # Control: the same trade in autocommit is published as soon as it commits.
    buy(environment, WALLET_A, SOL)
    assert len(dispatched) == 1
    assert dispatched[0].type == "VIRTUAL_TRADE_EXECUTED"
    assert dispatched[0].sequence == 1


@pytest.mark.django_db(transaction=True)
def test_refused_trade_in_autocommit_publishes_nothing(
    make_environment: MakeEnvironment, dispatched: list[Event]
) -> None:
    environment = make_environment()
    join(environment, WALLET_A)
    with pytest.raises(DomainError):
        buy(environment, WALLET_A, DEFAULT_STARTING_SOL + 1)
    assert dispatched == []


# --- one sequence for trades and chat ------------------------------------------------------------


def test_trades_and_chat_share_the_sequence(joined: Environment) -> None:
    first = buy(joined, WALLET_A, SOL).trade
    chat = chat_post(environment_id=joined.id, wallet=WALLET_B, message="nice").line
    second = buy(joined, WALLET_B, SOL).trade
    assert (first.sequence, chat.sequence, second.sequence) == (1, 2, 3)
    assert fresh(joined).sequence == 3
    assert list(Trade.objects.order_by("sequence").values_list("sequence", flat=True)) == [1, 3]
    assert list(ChatMessage.objects.values_list("sequence", flat=True)) == [2]


def test_sequences_are_per_environment(make_environment: MakeEnvironment) -> None:
    one, two = make_environment(name="one"), make_environment(name="two")
    join(one, WALLET_A)
    join(two, WALLET_A)
    buy(one, WALLET_A, SOL)
    buy(one, WALLET_A, SOL)
    assert buy(two, WALLET_A, SOL).trade.sequence == 1
    assert chat_post(environment_id=two.id, wallet=WALLET_A, message="x").sequence == 2
    assert fresh(one).sequence == 2


# --- the trade's own statements ------------------------------------------------------------------


def test_one_volume_bucket_per_minute_sums_the_trades(joined: Environment) -> None:
    first = buy(joined, WALLET_A, SOL).trade
    second = sell(joined, WALLET_A, first.token_amount // 2).trade
    third = buy(joined, WALLET_B, 2 * SOL).trade
    buckets = {
        bucket.minute: bucket.sol_amount
        for bucket in MinuteCandle.objects.filter(environment=joined)
    }
    expected: dict[Any, int] = {}
    for trade in (first, second, third):
        minute = trade.created_at.replace(second=0, microsecond=0)
        expected[minute] = expected.get(minute, 0) + trade.sol_amount
    assert buckets == expected


def test_a_failed_write_rolls_the_whole_trade_back(joined: Environment) -> None:
    """A statement of the trade's write that fails (here the next sequence is already taken)
    raises Django's IntegrityError, and nothing of the trade stays."""
    Trade.objects.create(
        environment=joined,
        wallet=WALLET_B,
        is_buy=True,
        amount=1,
        sol_amount=1,
        token_amount=1,
        protocol_fee=0,
        creator_fee=0,
        sequence=joined.sequence + 1,
        virtual_sol_after=1,
        virtual_token_after=1,
    )
    before = snapshot()
    with pytest.raises(IntegrityError):
        buy(joined, WALLET_A, SOL, request_id="taken-sequence")
    assert snapshot() == before
    assert not Receipt.objects.exists()
    assert not MinuteCandle.objects.exists()


# --- conservation under random trading -----------------------------------------------------------


def random_amount(rng: random.Random, available: int) -> int:
    """Mostly affordable amounts, sometimes too much, too little or everything."""
    roll = rng.random()
    if roll < 0.1:
        return available + rng.randint(1, 10**9)
    if roll < 0.15:
        return rng.randint(0, 2)
    if roll < 0.25:
        return available
    return rng.randint(1, max(1, available // 3))


@pytest.mark.parametrize("seed", [1, 7, 2024, 31337])
def test_conservation_under_random_trades(make_environment: MakeEnvironment, seed: int) -> None:
    rng = random.Random(seed)
    environment = make_environment(
        starting_sol_balance=60 * SOL,
        protocol_fee_bps=rng.choice([0, 95, 100]),
        creator_fee_bps=rng.choice([0, 30]),
    )
    wallets = [WALLET_A, WALLET_B, WALLET_C]
    join(environment, *wallets)
    model = environment.market  # the market as the pure-math model says it should be
    accepted = refused = 0

    for _ in range(48):
        wallet = rng.choice(wallets)
        if rng.random() < 0.1:
            chat_post(environment_id=environment.id, wallet=wallet, message=f"{rng.random()}")
            continue
        held = position(environment, wallet)
        is_buy = held.token_balance == 0 or rng.random() < 0.55
        available = held.sol_balance if is_buy else held.token_balance
        amount = random_amount(rng, available)
        min_out = None
        if rng.random() < 0.1:
            min_out = rng.randint(0, 10**14)
        before = snapshot()
        try:
            result = trade_execute(
                environment_id=environment.id,
                wallet=wallet,
                amount=amount,
                is_buy=is_buy,
                min_amount_out=min_out,
            )
        except DomainError as error:
            refused += 1
            assert error.code in {
                ErrorCode.INSUFFICIENT_BALANCE,
                ErrorCode.INVALID_MESSAGE,
                ErrorCode.SLIPPAGE_EXCEEDED,
                ErrorCode.ENVIRONMENT_CLOSED,
            }
            assert snapshot() == before
            continue
        accepted += 1
        expected = quotes.quote(model, amount=amount, is_buy=is_buy)
        fill = expected.fill
        model = model.after(expected)
        assert result.trade.sol_amount == fill.sol_amount
        assert result.trade.token_amount == fill.token_amount
        assert result.trade.fee == fill.fee

    # Some seeds buy the curve out and trade on in the pool; all of them trade first.
    assert accepted >= 5
    assert refused > 0

    environment = fresh(environment)
    assert environment.market == model
    positions = list(Position.objects.filter(environment=environment))
    trades = list(Trade.objects.filter(environment=environment))
    chats = list(ChatMessage.objects.filter(environment=environment))
    assert len(positions) == len(wallets)
    assert all(p.sol_balance >= 0 and p.token_balance >= 0 for p in positions)
    assert environment.real_sol_reserves >= 0
    assert environment.real_token_reserves >= 0

    # The LP fee stays in the pool; the protocol and creator fees and the migration fee leave.
    fees = sum(t.protocol_fee + t.creator_fee for t in trades)
    graduated = environment.phase == Phase.POOL
    market_sol = environment.pool_sol_reserves if graduated else environment.real_sol_reserves
    migration_fee = environment.migration_fee if graduated else 0
    assert (
        sum(p.sol_balance for p in positions) + market_sol + fees + migration_fee
        == len(wallets) * environment.starting_sol_balance
    )
    market_tokens = (
        environment.pool_token_reserves
        - (environment.total_supply - environment.initial_real_token)
        if graduated
        else environment.real_token_reserves
    )
    assert sum(p.token_balance for p in positions) + market_tokens == environment.initial_real_token
    assert environment.virtual_sol_reserves - environment.real_sol_reserves == (
        environment.initial_virtual_sol
    )
    assert environment.virtual_token_reserves - environment.real_token_reserves == (
        environment.initial_virtual_token - environment.initial_real_token
    )
    assert sum(t.phase == Phase.POOL for t in trades) == 0 or graduated

    events = list(MarketEvent.objects.filter(environment=environment))
    assert len(events) == int(graduated)
    sequences = sorted(
        [t.sequence for t in trades] + [c.sequence for c in chats] + [e.sequence for e in events]
    )
    assert sequences == list(range(1, len(sequences) + 1))
    assert environment.sequence == len(sequences) == accepted + len(chats) + len(events)
    last = max(trades, key=lambda t: t.sequence)
    assert (last.virtual_sol_after, last.virtual_token_after) == (
        (environment.pool_sol_reserves, environment.pool_token_reserves)
        if last.phase == Phase.POOL
        else (environment.virtual_sol_reserves, environment.virtual_token_reserves)
    )
