"""Operator rounds: a room starts over at its initial curve with fresh balances; history stays."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from environments.models import ChatMessage, Environment, Position, RoundPosition
from environments.rounds import round_due, round_start, rounds_start_due
from environments.selectors import environment_state
from environments.services import chat_post, participant_enter
from kernel.realtime import Event
from protocol.errors import ErrorCode
from tests.conftest import WALLET_A, WALLET_B, assert_refused, buy, fresh, join, position
from trading import curve
from trading.models import MarketEvent, Trade
from trading.state import CONSTANT_FIELDS, CurveConstants, Phase

pytestmark = pytest.mark.django_db

STARTING = curve.DEFAULT_STARTING_SOL


def graduate(environment: Environment, *, quiet_for: timedelta) -> None:
    """Put the market in its pool phase, its last trade ``quiet_for`` ago (what a completing
    buy leaves behind, as far as rounds care)."""
    moment = timezone.now() - quiet_for
    Environment.objects.filter(pk=environment.pk).update(
        phase=Phase.POOL,
        real_token_reserves=0,
        pool_sol_reserves=84_000_000_000,
        pool_token_reserves=206_900_000_000_000,
        graduated_at=moment,
        last_trade_at=moment,
    )


def test_a_new_round_archives_positions_and_starts_the_market_over(
    joined, dispatched, django_capture_on_commit_callbacks
):
    buy(joined, WALLET_A, 2 * curve.LAMPORTS_PER_SOL)
    buy(joined, WALLET_B, curve.LAMPORTS_PER_SOL)
    chat_post(environment_id=joined.id, wallet=WALLET_A, message="gm")
    before = {wallet: position(joined, wallet) for wallet in (WALLET_A, WALLET_B)}
    Environment.objects.filter(pk=joined.pk).update(starting_sol_balance=7 * 10**9)
    dispatched.clear()

    with django_capture_on_commit_callbacks(execute=True):
        started = round_start(environment_id=joined.id)
        assert dispatched == []  # not before the commit

    assert started is not None and started.positions == 2
    environment = fresh(joined)
    initial = CurveConstants.from_fields(
        {field: getattr(environment, field) for field in CONSTANT_FIELDS.values()}
    ).fields()
    for field in ("virtual_sol_reserves", "virtual_token_reserves", "real_sol_reserves"):
        assert getattr(environment, field) == initial[field], field
    assert environment.real_token_reserves == environment.initial_real_token
    assert environment.market_cap == initial["market_cap"]
    assert environment.phase == Phase.CURVE
    assert (environment.pool_sol_reserves, environment.pool_token_reserves) == (0, 0)
    assert environment.graduated_at is None and environment.last_trade_at is None
    assert environment.round == 2
    assert environment.round_started_at is not None
    assert environment.sequence == 4  # two trades, a chat line, then the new round

    # Everyone starts again with the current starting balance; the old balances are kept.
    for wallet, old in before.items():
        now = position(joined, wallet)
        assert (now.sol_balance, now.token_balance, now.last_traded_at) == (7 * 10**9, 0, None)
        record = RoundPosition.objects.get(environment=joined, wallet=wallet)
        assert record.round == 1
        assert (record.sol_balance, record.token_balance) == (old.sol_balance, old.token_balance)
        assert record.joined_at == old.joined_at

    # History stays: trades (of round 1), chat, and the event itself.
    assert list(Trade.objects.values_list("round", flat=True)) == [1, 1]
    assert ChatMessage.objects.filter(environment=joined).count() == 1
    event = MarketEvent.objects.get(environment=joined)
    assert (event.kind, event.sequence, event.round) == ("ROUND_STARTED", 4, 2)
    assert event.data["environmentId"] == joined.id and event.data["round"] == 2

    # Announced once, after commit, under its sequence.
    assert [(e.type, e.sequence) for e in dispatched] == [("ROUND_STARTED", 4)]
    assert isinstance(dispatched[0], Event)
    assert '"type":"ROUND_STARTED"' in dispatched[0].text.replace(" ", "")

    # The state a member now reads is the new round's.
    state = environment_state(environment, position(joined, WALLET_A))
    assert state.balance.sol == str(7 * 10**9) and state.balance.token == "0"
    assert state.sequence == 4 and state.round == 2 and state.phase == "curve"


def test_trades_of_the_new_round_carry_it(joined):
    buy(joined, WALLET_A, curve.LAMPORTS_PER_SOL)
    round_start(environment_id=joined.id)
    result = buy(joined, WALLET_A, curve.LAMPORTS_PER_SOL)
    assert result.trade.round == 2
    assert result.trade.sequence == 3
    assert position(joined, WALLET_A).token_balance == result.trade.token_amount


def test_an_unknown_environment_is_not_found(db):
    assert_refused(
        ErrorCode.ENVIRONMENT_NOT_FOUND, lambda: round_start(environment_id="no_such_room")
    )


def test_a_due_round_needs_graduation_quiet_and_the_setting(environment):
    assert not round_due(environment)  # curve phase, no setting
    Environment.objects.filter(pk=environment.pk).update(new_round_after=600)
    assert not round_due(fresh(environment))  # still on its curve
    graduate(environment, quiet_for=timedelta(seconds=599))
    assert not round_due(fresh(environment))
    graduate(environment, quiet_for=timedelta(seconds=600))
    assert round_due(fresh(environment))
    Environment.objects.filter(pk=environment.pk).update(new_round_after=None)
    assert not round_due(fresh(environment))


def test_only_if_due_rechecks_under_the_lock(environment):
    Environment.objects.filter(pk=environment.pk).update(new_round_after=600)
    graduate(environment, quiet_for=timedelta(seconds=10))
    assert round_start(environment_id=environment.id, only_if_due=True) is None
    assert fresh(environment).round == 1
    graduate(environment, quiet_for=timedelta(hours=1))
    assert round_start(environment_id=environment.id, only_if_due=True) is not None
    assert round_start(environment_id=environment.id, only_if_due=True) is None  # done already
    assert fresh(environment).round == 2


def test_joining_a_graduated_quiet_demo_starts_a_new_round_first(environment):
    join(environment, WALLET_A)
    Position.objects.filter(environment=environment, wallet=WALLET_A).update(
        sol_balance=1, token_balance=5
    )
    Environment.objects.filter(pk=environment.pk).update(new_round_after=600)
    graduate(environment, quiet_for=timedelta(hours=2))

    state = participant_enter(environment_id=environment.id, wallet=WALLET_B, connection="c1")

    assert state.phase == "curve"
    assert state.round == 2
    assert state.balance.sol == str(STARTING)
    assert position(environment, WALLET_A).sol_balance == STARTING
    assert RoundPosition.objects.filter(environment=environment).count() == 2  # A and B


def test_joining_a_room_that_is_not_due_changes_nothing(environment):
    Environment.objects.filter(pk=environment.pk).update(new_round_after=600)
    graduate(environment, quiet_for=timedelta(seconds=30))
    state = participant_enter(environment_id=environment.id, wallet=WALLET_A, connection="c1")
    assert state.phase == "pool" and state.round == 1


def test_the_periodic_check_starts_only_due_rounds(make_environment):
    due, recent, manual = (make_environment(name) for name in ("Due", "Recent", "Manual"))
    Environment.objects.filter(pk__in=[due.pk, recent.pk]).update(new_round_after=600)
    graduate(due, quiet_for=timedelta(hours=1))
    graduate(recent, quiet_for=timedelta(minutes=1))
    graduate(manual, quiet_for=timedelta(days=1))
    started = rounds_start_due()
    assert [result.environment.id for result in started] == [due.id]
    assert dict(Environment.objects.values_list("id", "round")) == {
        due.id: 2,
        recent.id: 1,
        manual.id: 1,
    }


# --- the command ------------------------------------------------------------------------------


def reset(*args: str) -> str:
    out = StringIO()
    call_command("reset_environment", *args, stdout=out)
    return out.getvalue()


def test_reset_environment_starts_a_new_round(joined):
    buy(joined, WALLET_A, curve.LAMPORTS_PER_SOL)
    output = reset(joined.id)
    assert f"Started round 2 of {joined.name} ({joined.id})" in output
    assert "2 position(s) archived and reset to 100 SOL" in output
    assert fresh(joined).round == 2
    assert position(joined, WALLET_A).token_balance == 0


def test_reset_environment_dry_run_changes_nothing(joined):
    buy(joined, WALLET_A, curve.LAMPORTS_PER_SOL)
    before = list(Environment.objects.values()), list(Position.objects.values())
    output = reset(joined.id, "--dry-run")
    assert "Would start round 2" in output and "Nothing changed" in output
    assert (list(Environment.objects.values()), list(Position.objects.values())) == before
    assert not RoundPosition.objects.exists()


def test_reset_environment_refuses_unknown_ids(environment):
    with pytest.raises(CommandError, match="no environment with id nope"):
        reset(environment.id, "nope")
    assert fresh(environment).round == 1  # nothing reset when one id is wrong


# --- concurrent trades during a reset (PostgreSQL, real threads) ------------------------------


def in_threads(work: list[Any]) -> list[Any]:
    barrier = threading.Barrier(len(work))
    results: list[Any] = [None] * len(work)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work[index]()
        except BaseException as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.django_db(transaction=True)
def test_trades_racing_a_reset_land_wholly_in_one_round(postgres, make_environment):
    environment = make_environment()
    wallets = [f"Racer{index}".ljust(44, "x") for index in range(6)]
    join(environment, *wallets)
    amount = curve.LAMPORTS_PER_SOL // 10

    def trader(wallet: str) -> Any:
        return lambda: [buy(environment, wallet, amount) for _ in range(10)]

    def reset() -> Any:
        # Once trading is under way, so that trades are in flight on both sides of it.
        for _ in range(500):
            if Trade.objects.filter(environment=environment).count() >= len(wallets):
                break
            time.sleep(0.01)
        return round_start(environment_id=environment.id)

    results = in_threads([trader(wallet) for wallet in wallets] + [reset])
    assert not [result for result in results if isinstance(result, BaseException)], results

    environment = fresh(environment)
    boundary = MarketEvent.objects.get(environment=environment).sequence
    trades = list(Trade.objects.filter(environment=environment).order_by("sequence"))
    assert len(trades) == 60
    # Sequences stay one counter, and each trade's round is the side of the reset it fell on.
    assert sorted([t.sequence for t in trades] + [boundary]) == list(range(1, 62))
    for trade in trades:
        assert trade.round == (1 if trade.sequence < boundary else 2)
    new_round = [trade for trade in trades if trade.round == 2]
    # The market is the initial curve plus exactly the new round's trades.
    if new_round:
        assert environment.virtual_sol_reserves == new_round[-1].virtual_sol_after
        assert environment.virtual_token_reserves == new_round[-1].virtual_token_after
    else:
        assert environment.virtual_sol_reserves == environment.initial_virtual_sol
    assert environment.real_token_reserves == environment.initial_real_token - sum(
        trade.token_amount for trade in new_round
    )
    # Every wallet's balances: the archive holds round 1's, the position round 2's, and each
    # adds up from the starting balance and that round's trades (buys pay amount + fees).
    for wallet in wallets:
        for round_, balances in (
            (1, RoundPosition.objects.get(environment=environment, wallet=wallet)),
            (2, position(environment, wallet)),
        ):
            mine = [t for t in trades if t.wallet == wallet and t.round == round_]
            assert balances.token_balance == sum(t.token_amount for t in mine)
            spent = sum(t.sol_amount + t.fee for t in mine)
            assert balances.sol_balance == STARTING - spent, (wallet, round_)
