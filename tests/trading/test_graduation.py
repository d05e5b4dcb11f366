"""Graduation: the buy that completes the curve migrates the market to its PumpSwap pool in the
same transaction, and trading goes on there (holders can always sell). Numbers are worked out by
hand from the formulas of :mod:`trading.curve` and :mod:`trading.pool`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async
from django.db import connections

import protocol
from environments.models import Environment, Position
from environments.selectors import environment_events
from environments.services import environment_create
from kernel.realtime import Event
from rewards.models import RewardEntry
from rewards.services import settle_rewards
from tests.conftest import WALLET_A, WALLET_B, Wallet, buy, fresh, join, position
from tests.e2e import conftest as e2e
from trading.curve import DEFAULT_REAL_TOKEN, DEFAULT_STARTING_SOL, DEFAULT_TOTAL_SUPPLY
from trading.models import MarketEvent, Trade
from trading.pool import DEFAULT_MIGRATION_FEE, Pool
from trading.services import trade_execute
from trading.state import CurveConstants, Phase

daphne_server = e2e.daphne_server  # the real-server fixture
SOL = 10**9
MakeEnvironment = Callable[..., Environment]

# The default curve bought out by one 100 SOL budget (95 + 30 bps on the curve):
CURVE_COST = 85_005_359_057  # lamports the curve takes for its last 793.1 M tokens
CURVE_FEES = 807_550_912 + 255_016_078  # ceil(cost * 95 / 10^4) + ceil(cost * 30 / 10^4)
UNSPENT = DEFAULT_STARTING_SOL - CURVE_COST - CURVE_FEES  # 13.932073953 SOL
POOL_SOL = CURVE_COST - DEFAULT_MIGRATION_FEE  # 84.990359056 SOL
POOL_TOKEN = DEFAULT_TOTAL_SUPPLY - DEFAULT_REAL_TOKEN  # 206.9 M tokens never sold


def sell(environment: Environment, wallet: str, amount: int) -> Any:
    return trade_execute(environment_id=environment.id, wallet=wallet, amount=amount, is_buy=False)


@pytest.fixture
def room(make_environment: MakeEnvironment) -> Environment:
    """The default curve without the default 50 SOL limit, so one buy can complete it."""
    environment = make_environment(max_trade_lamports=None)
    join(environment, WALLET_A, WALLET_B)
    return environment


@pytest.mark.django_db
def test_the_completing_buy_stops_at_completion_and_migrates(room: Environment) -> None:
    result = buy(room, WALLET_A, DEFAULT_STARTING_SOL)

    trade = result.trade
    assert (trade.token_amount, trade.sol_amount, trade.fee) == (
        DEFAULT_REAL_TOKEN,
        CURVE_COST,
        CURVE_FEES,
    )
    assert (trade.phase, trade.sequence, trade.lp_fee) == (Phase.CURVE, 1, 0)
    assert UNSPENT == 13_932_073_953
    assert result.own.unspent == str(UNSPENT)
    assert result.own.balance is not None
    assert result.own.balance.sol == str(UNSPENT)
    assert position(room, WALLET_A).sol_balance == UNSPENT

    environment = fresh(room)
    assert environment.phase == Phase.POOL
    assert environment.graduated_at == trade.created_at
    assert (environment.pool_sol_reserves, environment.pool_token_reserves) == (
        84_990_359_056,
        206_900_000_000_000,
    )
    assert (POOL_SOL, POOL_TOKEN) == (84_990_359_056, 206_900_000_000_000)
    assert environment.real_token_reserves == 0
    assert environment.real_sol_reserves == CURVE_COST  # the curve's record stays as it ended
    assert environment.market_cap == POOL_SOL * DEFAULT_TOTAL_SUPPLY // POOL_TOKEN
    assert environment.sequence == 2  # the trade is 1, the graduation 2

    event = MarketEvent.objects.get()
    assert (event.sequence, event.round, event.kind) == (2, 1, "MARKET_GRADUATED")
    assert event.data["pool"] == {
        "solReserves": "84990359056",
        "tokenReserves": "206900000000000",
        "fees": {"lpBps": 20, "protocolBps": 5, "creatorBps": 5},
    }
    assert event.data["migrationFee"] == str(DEFAULT_MIGRATION_FEE)
    assert (event.data["environmentId"], event.data["sequence"]) == (room.id, 2)


@pytest.mark.django_db
def test_a_buy_that_does_not_complete_says_nothing_unspent(room: Environment) -> None:
    result = buy(room, WALLET_A, SOL)
    assert result.own.unspent is None
    assert "unspent" not in protocol.dump(result.own)
    assert fresh(room).phase == Phase.CURVE
    assert not MarketEvent.objects.exists()


@pytest.mark.django_db
def test_graduation_is_published_once_after_the_trade(
    room: Environment,
    dispatched: list[Event],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        buy(room, WALLET_A, DEFAULT_STARTING_SOL)
        assert dispatched == []
    assert [(event.type, event.sequence) for event in dispatched] == [
        ("VIRTUAL_TRADE_EXECUTED", 1),
        ("MARKET_GRADUATED", 2),
    ]
    graduated = protocol.dump(dispatched[1].data)
    assert graduated == MarketEvent.objects.get().data
    assert "unspent" not in protocol.dump(dispatched[0].data)  # the public copy

    with django_capture_on_commit_callbacks(execute=True):
        buy(room, WALLET_B, SOL)  # a pool trade: no second graduation
    assert [event.type for event in dispatched[2:]] == ["VIRTUAL_TRADE_EXECUTED"]
    # A process that missed them replays the same events in order.
    replayed = environment_events(room.id, 0, 3)
    assert [(event.type, event.sequence) for event in replayed] == [
        ("VIRTUAL_TRADE_EXECUTED", 1),
        ("MARKET_GRADUATED", 2),
        ("VIRTUAL_TRADE_EXECUTED", 3),
    ]
    assert [event.text for event in replayed] == [event.text for event in dispatched]


@pytest.mark.django_db
def test_trading_goes_on_in_the_pool(room: Environment) -> None:
    buy(room, WALLET_A, DEFAULT_STARTING_SOL)
    pool = Pool(sol=POOL_SOL, token=POOL_TOKEN)

    bought = buy(room, WALLET_B, SOL)
    expected = pool.buy(SOL)
    assert expected.token_amount == 2_398_970_463_139  # see tests/trading/test_pool.py
    trade = bought.trade
    assert (trade.phase, trade.sequence) == (Phase.POOL, 3)
    assert (trade.sol_amount, trade.token_amount) == (997_008_971, 2_398_970_463_139)
    assert (trade.lp_fee, trade.protocol_fee, trade.creator_fee) == (1_994_018, 498_505, 498_505)
    assert trade.fee == 1_994_018 + 498_505 + 498_505
    after = expected.curve
    assert (trade.virtual_sol_after, trade.virtual_token_after) == (after.sol, after.token)
    assert bought.own.newReserves.sol == str(after.sol)  # newReserves: the pool's
    assert bought.own.trade.fee == str(trade.fee)
    assert bought.own.unspent is None
    environment = fresh(room)
    assert (environment.pool_sol_reserves, environment.pool_token_reserves) == (
        after.sol,
        after.token,
    )
    assert environment.market_cap == after.market_cap
    assert environment.sequence == 3
    b = position(room, WALLET_B)
    assert (b.sol_balance, b.token_balance) == (DEFAULT_STARTING_SOL - SOL + 1, 2_398_970_463_139)

    # The curve's holder sells in the pool: holders can always sell.
    sold = sell(room, WALLET_A, 10**14)
    expected_sell = after.sell(10**14)
    assert sold.trade.phase == Phase.POOL
    assert sold.trade.sol_amount == expected_sell.sol_amount
    assert position(room, WALLET_A).sol_balance == UNSPENT + expected_sell.sol_delta
    assert fresh(room).pool_sol_reserves == expected_sell.curve.sol


@pytest.mark.django_db
def test_rewards_settle_pool_trades(make_environment: MakeEnvironment) -> None:
    room = make_environment(max_trade_lamports=None, launched_by=WALLET_B)
    join(room, WALLET_A, WALLET_B)
    buy(room, WALLET_A, DEFAULT_STARTING_SOL)
    pool_trade = sell(room, WALLET_A, 10**14).trade
    assert pool_trade.phase == Phase.POOL
    assert pool_trade.creator_fee > 0
    settle_rewards(run_by="staff")
    entries = {
        entry.kind: (entry.wallet, entry.amount)
        for entry in RewardEntry.objects.filter(trade=pool_trade)
    }
    assert entries == {
        "creator_fee": (WALLET_B, pool_trade.creator_fee),  # to the launcher
        "trader_rebate": (WALLET_A, pool_trade.protocol_fee * 500 // 10_000),  # BRONZE share
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_conservation_across_the_migration_under_concurrent_trades(
    postgres: None, make_environment: MakeEnvironment
) -> None:
    room = make_environment(max_trade_lamports=None, starting_sol_balance=30 * SOL)
    wallets = [f"Wallet{index}{'W' * 37}"[:44] for index in range(8)]
    join(room, *wallets)
    start = threading.Barrier(len(wallets))
    errors: list[BaseException] = []

    def trade(wallet: str) -> None:
        try:
            start.wait()
            for amount in (12 * SOL, 3 * SOL):  # 8 x 15 SOL: well past the curve's 85
                trade_execute(environment_id=room.id, wallet=wallet, amount=amount, is_buy=True)
            held = Position.objects.get(environment=room, wallet=wallet).token_balance
            trade_execute(environment_id=room.id, wallet=wallet, amount=held // 2, is_buy=False)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=trade, args=(wallet,)) for wallet in wallets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []

    environment = fresh(room)
    trades = list(Trade.objects.filter(environment=room).order_by("sequence"))
    positions = list(Position.objects.filter(environment=room))
    (event,) = MarketEvent.objects.filter(environment=room)
    assert environment.phase == Phase.POOL
    assert len(trades) == 3 * len(wallets)

    # One counter: the trades and the one graduation take 1..n+1 without a gap, in that order:
    # every trade before the graduation is a curve trade, every one after it a pool trade.
    assert sorted([t.sequence for t in trades] + [event.sequence]) == list(
        range(1, len(trades) + 2)
    )
    assert environment.sequence == len(trades) + 1
    assert all(t.phase == Phase.CURVE for t in trades if t.sequence < event.sequence)
    assert all(t.phase == Phase.POOL for t in trades if t.sequence > event.sequence)
    completing = next(t for t in trades if t.sequence == event.sequence - 1)
    assert (completing.virtual_sol_after, completing.virtual_token_after) == (
        environment.virtual_sol_reserves,
        environment.virtual_token_reserves,
    )

    # SOL: what wallets hold, what the pool holds, the fees that left and the migration fee.
    fees_out = sum(t.protocol_fee + t.creator_fee for t in trades)
    assert (
        sum(p.sol_balance for p in positions)
        + environment.pool_sol_reserves
        + fees_out
        + environment.migration_fee
        == len(wallets) * 30 * SOL
    )
    # The migration moved exactly the curve's SOL, less its fee.
    assert int(event.data["pool"]["solReserves"]) == (
        environment.real_sol_reserves - environment.migration_fee
    )
    # Tokens: every token is held by a wallet or the pool.
    assert (
        sum(p.token_balance for p in positions) + environment.pool_token_reserves
        == environment.total_supply
    )
    assert all(p.sol_balance >= 0 and p.token_balance >= 0 for p in positions)


# --- over a real socket ---------------------------------------------------------------------------

# Frames a member may get between the ones this test waits for (presence, prices).
BACKGROUND = {"PARTICIPANTS", "PRICE_UPDATE"}


async def next_frame(socket: Any) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if frame["type"] not in BACKGROUND:
            return frame


@pytest.mark.timeout(90)
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_market_graduated_reaches_every_member_once(daphne_server: Any) -> None:
    environment = await database_sync_to_async(environment_create)(
        name="Graduation", constants=CurveConstants(max_trade_lamports=None)
    )
    alice, bob = Wallet(), Wallet()
    server = await database_sync_to_async(daphne_server)()
    async with (
        websockets.connect(server.ws, additional_headers=bearer(alice)) as a,
        websockets.connect(server.ws, additional_headers=bearer(bob)) as b,
    ):
        for socket, wallet in ((a, alice), (b, bob)):
            join = {"environmentId": environment.id, "userId": wallet.address}
            await socket.send(json.dumps({"type": "JOIN_ENVIRONMENT", "data": join}))
            assert (await next_frame(socket))["type"] == "ENVIRONMENT_STATE"

        order = {"environmentId": environment.id, "amount": str(DEFAULT_STARTING_SOL)}
        await a.send(json.dumps({"type": "VIRTUAL_TRADE", "data": {**order, "isBuy": True}}))
        own, graduated_a = await next_frame(a), await next_frame(a)
        public, graduated_b = await next_frame(b), await next_frame(b)
        assert (own["type"], own["data"]["sequence"], own["data"]["unspent"]) == (
            "VIRTUAL_TRADE_EXECUTED",
            1,
            str(UNSPENT),
        )
        assert (public["type"], public["data"]["sequence"]) == ("VIRTUAL_TRADE_EXECUTED", 1)
        assert "unspent" not in public["data"]
        for graduated in (graduated_a, graduated_b):
            assert graduated["type"] == "MARKET_GRADUATED"
            assert graduated["data"]["sequence"] == 2
            assert graduated["data"]["pool"]["solReserves"] == str(POOL_SOL)
            assert graduated["data"]["pool"]["tokenReserves"] == str(POOL_TOKEN)
        assert graduated_a == graduated_b

        # The next trade is in the pool, and nobody hears of a graduation again.
        order["amount"] = str(SOL)
        await b.send(json.dumps({"type": "VIRTUAL_TRADE", "data": {**order, "isBuy": True}}))
        for socket in (a, b):
            frame = await next_frame(socket)
            assert (frame["type"], frame["data"]["sequence"]) == ("VIRTUAL_TRADE_EXECUTED", 3)
            await socket.send(json.dumps({"type": "HEARTBEAT"}))
            assert (await next_frame(socket))["type"] == "HEARTBEAT"
    assert "Traceback" not in server.output()


def bearer(wallet: Wallet) -> dict[str, str]:
    return {"Authorization": f"Bearer {wallet.token}"}
