"""Settlement by hand-computed examples, idempotence, dry run, concurrent runs, the ledger."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections
from django.db.models import Sum

from environments.services import environment_create, environment_join
from rewards.models import RewardAccount, RewardEntry, RewardTier, Settlement
from rewards.services import settle_rewards, tier_of
from tests.conftest import Wallet
from trading.models import Trade
from trading.services import trade_execute


def trade(environment, wallet: Wallet, amount: int = 10**9) -> Trade:
    environment_join(environment_id=environment.id, wallet=wallet.address)
    return trade_execute(
        environment_id=environment.id, wallet=wallet.address, amount=amount, is_buy=True
    ).trade


def launch(launcher: Wallet, count: int = 1):
    return [
        environment_create(name=f"Launch {index}", launched_by=launcher.address)
        for index in range(count)
    ]


@pytest.mark.django_db
def test_the_default_tiers_follow_the_published_table():
    tiers = list(RewardTier.objects.values_list("name", "min_launches", "min_volume", "rate_bps"))
    assert tiers == [
        ("BRONZE", 0, 0, 500),
        ("SILVER", 5, 0, 1000),
        ("GOLD", 15, 0, 1500),
        ("PLATINUM", 30, 0, 2000),
        ("DIAMOND", 50, 0, 2500),
    ]
    table = list(RewardTier.objects.all())
    assert tier_of(launches=4, volume=0, tiers=table).name == "BRONZE"
    assert tier_of(launches=5, volume=0, tiers=table).name == "SILVER"
    assert tier_of(launches=50, volume=0, tiers=table).name == "DIAMOND"


@pytest.mark.django_db
def test_a_launcher_and_two_traders_at_different_tiers():
    launcher, bronze, silver = Wallet(), Wallet(), Wallet()
    (room,) = launch(launcher)
    launch(silver, 4)  # four launches: still BRONZE when it trades...
    first = trade(room, bronze)
    second = trade(room, silver, 2 * 10**9)
    launch(silver)  # ...and SILVER by its fifth launch, before the settlement runs
    summary = settle_rewards(run_by="staff")

    assert summary.trades == 2
    creator = first.creator_fee + second.creator_fee
    bronze_rebate = first.protocol_fee * 500 // 10_000
    silver_rebate = second.protocol_fee * 1000 // 10_000
    assert (first.protocol_fee, first.creator_fee) == (9_382_717, 2_962_963)
    assert bronze_rebate == 469_135
    assert summary.to_launchers == creator
    assert summary.to_traders == bronze_rebate + silver_rebate
    balances = dict(RewardAccount.objects.values_list("wallet", "unclaimed"))
    assert balances == {
        launcher.address: creator,
        bronze.address: bronze_rebate,
        silver.address: silver_rebate,
    }
    entry = RewardEntry.objects.get(trade=second, kind="trader_rebate")
    assert (entry.tier, entry.rate_bps) == ("SILVER", 1000)
    settlement = Settlement.objects.get()
    assert settlement.trades_settled == 2
    assert settlement.total_paid == creator + bronze_rebate + silver_rebate
    assert settlement.finished_at is not None


@pytest.mark.django_db
def test_running_twice_settles_nothing_twice_and_a_dry_run_writes_nothing():
    launcher, trader = Wallet(), Wallet()
    (room,) = launch(launcher)
    for _ in range(3):
        trade(room, trader)
    output = StringIO()
    call_command("settle_rewards", "--dry-run", stdout=output)
    assert "Dry run" in output.getvalue()
    assert RewardEntry.objects.count() == 0
    assert Trade.objects.filter(settled_at__isnull=False).count() == 0
    assert Settlement.objects.count() == 0

    dry = settle_rewards(run_by="staff", dry_run=True)
    real = settle_rewards(run_by="staff", batch_size=2)
    assert (dry.trades, dry.total) == (real.trades, real.total) == (3, real.total)
    again = settle_rewards(run_by="staff")
    assert again.trades == 0
    assert RewardEntry.objects.count() == 6


@pytest.mark.django_db(transaction=True)
def test_two_settlements_at_once_settle_every_trade_exactly_once(postgres, published_tiers):
    launcher = Wallet()
    (room,) = launch(launcher)
    traders = [Wallet() for _ in range(4)]
    for index in range(60):
        trade(room, traders[index % 4], 10**8)
    results = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        results.append(settle_rewards(run_by="staff", batch_size=7))
        connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert RewardTier.objects.count() == 5
    assert sum(result.trades for result in results) == 60
    assert RewardEntry.objects.filter(kind="creator_fee").count() == 60
    assert RewardEntry.objects.filter(kind="trader_rebate").count() == 60
    assert_ledger_balances()


def assert_ledger_balances() -> None:
    """unclaimed + claimed = the sum of a wallet's entries; a trade's entries ≤ its fees."""
    totals = dict(
        RewardEntry.objects.values_list("wallet").annotate(total=Sum("amount")).order_by()
    )
    for account in RewardAccount.objects.all():
        assert account.unclaimed + account.claimed == totals[account.wallet]
    for settled in Trade.objects.filter(settled_at__isnull=False):
        paid = settled.rewards.aggregate(total=Sum("amount"))["total"] or 0
        assert paid <= settled.protocol_fee + settled.creator_fee


@pytest.mark.django_db
def test_the_ledger_balances_after_a_settlement():
    launcher, trader = Wallet(), Wallet()
    (room,) = launch(launcher)
    for _ in range(5):
        trade(room, trader)
    settle_rewards(run_by="staff")
    assert_ledger_balances()
