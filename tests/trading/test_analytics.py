"""The lobby's 24 h figures of a market's current round, against a recomputation from the
stored trades, exactly at the window's edge; their cost in statements."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from environments.models import Environment, Position
from environments.selectors import environment_state, environment_summaries, price_update
from environments.services import environment_join
from tests.trading.history import Clock, expected_figures, trade_at, wallet
from trading.curve import LAMPORTS_PER_SOL
from trading.models import Trade
from trading.selectors import market_analytics, volume_24h
from trading.services import trade_execute
from trading.state import Phase

pytestmark = pytest.mark.django_db

FRACTION = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
SOL = LAMPORTS_PER_SOL
# Half a minute and a half second into a minute, so the window starts inside its edge minute.
NOW = datetime(2026, 3, 2, 12, 0, 30, 500_000, tzinfo=UTC)
START = NOW - timedelta(hours=24)
US = timedelta(microseconds=1)
MS = timedelta(milliseconds=1)


def assert_figures(environment: Environment, now: datetime) -> dict[str, object]:
    figures = market_analytics(Environment.objects.get(pk=environment.pk), now=now)
    expected = expected_figures(list(Trade.objects.filter(environment=environment)), now)
    assert figures["volume24h"] == str(expected.volume)
    assert figures["trades24h"] == expected.trades
    assert figures["uniqueTraders24h"] == expected.traders
    change = figures["priceChange24h"]
    assert isinstance(change, str) and FRACTION.match(change), change
    assert Decimal(change) == Context(prec=10).plus(expected.change)
    return figures


def test_without_trades_every_figure_is_zero(environment: Environment) -> None:
    figures = market_analytics(environment, now=NOW)
    assert figures == {
        "volume24h": "0",
        "trades24h": 0,
        "uniqueTraders24h": 0,
        "priceChange24h": "0",
        "progress": "0",
    }


def test_trades_leave_the_window_exactly_24_hours_after_they_happened(
    environment: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, START)
    a, b, c, d = (wallet(name) for name in ("Alice", "Bob", "Carol", "Dave"))
    moments = [
        (START - timedelta(minutes=3), a, 2 * SOL, True),  # before the edge minute
        (START - MS, a, 3 * SOL, True),  # in the edge minute, before the start
        (START, b, 1 * SOL, True),  # exactly 24 h before NOW: out, the reference
        (START + US, c, 2 * SOL, True),
        (START + MS, d, 1 * SOL, True),
        (START + timedelta(seconds=40), b, 10**12, False),  # the next minute: a sell
        (NOW - timedelta(hours=1), a, 4 * SOL, True),
        (NOW - timedelta(seconds=1), b, 10**11, False),
    ]
    for moment, who, amount, is_buy in moments:
        trade_at(clock, moment, environment.id, who, amount, is_buy=is_buy)

    figures = assert_figures(environment, NOW)
    assert figures["trades24h"] == 5  # START + 1 µs onwards
    assert figures["uniqueTraders24h"] == 4
    assert figures["priceChange24h"] != "0"
    later = assert_figures(environment, NOW + US)  # the START + 1 µs trade is out
    assert later["trades24h"] == 4
    assert later["uniqueTraders24h"] == 3  # Carol traded only then
    still_later = assert_figures(environment, NOW + MS)
    assert still_later["trades24h"] == 3
    assert still_later["uniqueTraders24h"] == 2
    assert assert_figures(environment, NOW - US)["trades24h"] == 6  # START - 1 µs: 2 are in
    for minutes in (1, 2, 59, 61, 24 * 60 - 1):
        assert_figures(environment, NOW + timedelta(minutes=minutes))
    assert int(later["volume24h"]) == volume_24h(environment.id, now=NOW + US)


def test_the_reference_is_the_last_minute_before_the_edge_minute(
    environment: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, START)
    for moment, amount in (
        (START - timedelta(hours=2), SOL),
        (START - timedelta(minutes=2), 2 * SOL),  # the reference: no trade in the edge minute
        (START + timedelta(seconds=1), 3 * SOL),  # in the edge minute, after the start
        (NOW - timedelta(minutes=1), 4 * SOL),
    ):
        trade_at(clock, moment, environment.id, wallet("Alice"), amount, is_buy=True)
    figures = assert_figures(environment, NOW)
    assert figures["trades24h"] == 2


def test_a_round_younger_than_a_day_is_compared_with_its_first_trade(
    environment: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, NOW)
    first = trade_at(clock, NOW - timedelta(hours=3), environment.id, wallet("A"), SOL, is_buy=True)
    trade_at(clock, NOW - timedelta(hours=2), environment.id, wallet("B"), 5 * SOL, is_buy=True)
    last = trade_at(
        clock, NOW - timedelta(hours=1), environment.id, wallet("A"), 10**12, is_buy=False
    )
    figures = assert_figures(environment, NOW)
    expected = Context(prec=10).plus(
        Context(prec=100).divide(last.price - first.price, first.price)
    )
    assert Decimal(str(figures["priceChange24h"])) == expected
    assert figures["uniqueTraders24h"] == 2


def test_the_figures_cover_the_current_round_only(
    environment: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, NOW)
    for hours in (5, 4):
        trade_at(clock, NOW - timedelta(hours=hours), environment.id, wallet("A"), SOL, is_buy=True)
    # A new round, as an operator's reset leaves it: the positions' last trade forgotten.
    Environment.objects.filter(pk=environment.pk).update(round=2)
    Position.objects.filter(environment=environment).update(last_traded_at=None)
    assert market_analytics(Environment.objects.get(pk=environment.pk), now=NOW)["volume24h"] == "0"
    trade = trade_at(clock, NOW - timedelta(hours=1), environment.id, wallet("B"), SOL, is_buy=True)
    assert trade.round == 2
    figures = market_analytics(Environment.objects.get(pk=environment.pk), now=NOW)
    assert figures["volume24h"] == str(trade.sol_amount)
    assert figures["trades24h"] == 1
    assert figures["uniqueTraders24h"] == 1
    assert figures["priceChange24h"] == "0"  # its first trade is its last
    assert volume_24h(environment.id, now=NOW) == trade.sol_amount
    clock.moment = NOW
    # PRICE_UPDATE's volume too: round 1's trades of 4 and 5 hours ago are not in it.
    assert price_update(environment_id=environment.id).volume == str(trade.sol_amount)


def test_progress_is_the_part_of_the_real_tokens_sold(environment: Environment) -> None:
    environment_join(environment_id=environment.id, wallet=wallet("A"))
    trade_execute(environment_id=environment.id, wallet=wallet("A"), amount=10 * SOL, is_buy=True)
    environment.refresh_from_db()
    sold = environment.initial_real_token - environment.real_token_reserves
    progress = market_analytics(environment, now=NOW)["progress"]
    assert isinstance(progress, str) and FRACTION.match(progress)
    exact = Decimal(sold) / Decimal(environment.initial_real_token)
    assert Decimal(progress) <= exact < Decimal(progress) + Decimal("1e-10")
    assert len(progress.replace("0.", "", 1).lstrip("0")) <= 10


def graduate(environment: Environment, *, sol: int, tokens: int) -> Environment:
    """The environment as a migration leaves it (its curve frozen, complete; its pool)."""
    Environment.objects.filter(pk=environment.pk).update(
        phase=Phase.POOL,
        pool_sol_reserves=sol,
        pool_token_reserves=tokens,
        real_token_reserves=0,
    )
    return Environment.objects.get(pk=environment.pk)


def test_a_graduated_market_is_priced_by_its_pool(environment: Environment) -> None:
    pooled = graduate(environment, sol=84_985_000_000, tokens=206_900_000_000_000)
    (summary,) = environment_summaries([pooled])
    assert summary.phase == "pool"
    assert summary.pool is not None
    assert summary.pool.solReserves == "84985000000"
    assert summary.pool.tokenReserves == "206900000000000"
    # 84.985 SOL / 206,900,000 tokens, 20 significant digits.
    assert summary.price == "0.00000041075398743354277429"
    assert summary.marketCap == str(84_985_000_000 * 10**15 // 206_900_000_000_000)
    assert summary.progress == "1"
    # The frozen curve stays in the curve's fields.
    assert summary.virtualSolReserves == str(pooled.virtual_sol_reserves)
    update = price_update(environment_id=environment.id)
    assert (update.price, update.marketCap, update.phase) == (
        summary.price,
        summary.marketCap,
        "pool",
    )
    assert update.pool == summary.pool


def test_a_curve_market_says_so_and_has_no_pool(environment: Environment) -> None:
    update = price_update(environment_id=environment.id)
    assert update.phase == "curve"
    assert update.pool is None
    dumped = update.model_dump(exclude_none=True)
    assert "pool" not in dumped


def test_a_list_reads_every_environments_analytics_in_one_statement(
    make_environment: Callable[..., Environment], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, NOW)
    environments = [make_environment(name=f"Launch {number}") for number in range(6)]
    for number, environment in enumerate(environments):
        for times in range(number % 3):
            moment = NOW - timedelta(minutes=10 * times + number)
            trade_at(clock, moment, environment.id, wallet(f"W{times}"), SOL, is_buy=True)
    listed = list(Environment.objects.filter(pk__in=[e.pk for e in environments]))
    clock.moment = NOW
    with CaptureQueriesContext(connection) as queries:
        summaries = environment_summaries(listed)
    assert len(queries) == 1
    for environment, summary in zip(listed, summaries, strict=True):
        expected = expected_figures(list(Trade.objects.filter(environment=environment)), NOW)
        assert summary.volume24h == str(expected.volume)
        assert summary.trades24h == expected.trades


def test_a_join_reads_its_analytics_in_one_statement(
    environment: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, NOW)
    trade_at(clock, NOW - timedelta(minutes=5), environment.id, wallet("A"), SOL, is_buy=True)
    environment, position = environment_join(environment_id=environment.id, wallet=wallet("A"))
    with CaptureQueriesContext(connection) as queries:
        state = environment_state(environment, position, participants=1)
    statements = [query["sql"] for query in queries.captured_queries]
    # Chat history, recent trades, and the analytics: one statement each.
    assert len(statements) == 3, statements
    assert state.trades24h == 1
    assert [trade.sequence for trade in state.trades] == [1]
